"""TestCase: one generated model, its inputs and the PyTorch reference outputs, as files on disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from higen.generation.config import GenConfig


class ModelFiles:
    """Where a test's files are, in a generated test's folder or a saved bug case's: ``directory``
    holds model.onnx, inputs.npz and, under the name ``reference_file``, the reference outputs."""

    directory: Path
    reference_file: str

    @property
    def model_path(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def inputs_path(self) -> Path:
        return self.directory / "inputs.npz"

    @property
    def reference_path(self) -> Path:
        return self.directory / self.reference_file


@dataclass
class TestCase(ModelFiles):
    config: GenConfig
    directory: Path  # holds model.onnx, inputs.npz, reference.npz
    n_nodes: int = 0
    nnsmith_ops: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    reference_nonfinite: bool = False
    gen_s: float = 0.0
    producers: dict[str, str] = field(default_factory=dict)  # output name -> op type producing it
    reference_file = "reference.npz"

    @property
    def op_types(self) -> list[str]:
        return [token[3:] for token in self.tokens if token.startswith("op:")]
