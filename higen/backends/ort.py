"""ONNX Runtime backend: optimizations all disabled (O0) or all enabled (O3), on CPU or the CUDA EP."""

from __future__ import annotations

from typing import Any

import onnxruntime as ort

from higen.backends.base import DeviceUnavailable, Target, Unsupported
from higen.tensors import Tensors

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
LEVELS = {"O0": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "O3": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
UNSUPPORTED_MARKERS = ("Could not find an implementation", "NOT_IMPLEMENTED", "Type Error: Type '")


class OrtBackend:
    def __init__(self, target: Target, disabled_optimizers: list[str] | None = None):
        target.check("ONNX Runtime", PROVIDERS, LEVELS)
        self.target = target
        self.provider = PROVIDERS[target.device]
        if self.provider not in ort.get_available_providers():
            raise DeviceUnavailable(
                f"ONNX Runtime {ort.__version__} has no {self.provider}: install onnxruntime-gpu on a CUDA machine"
            )
        self.options = ort.SessionOptions()
        self.options.graph_optimization_level = LEVELS[target.opt]
        self.options.intra_op_num_threads = 1
        self.options.inter_op_num_threads = 1
        self.options.log_severity_level = 3
        self.disabled_optimizers = disabled_optimizers or []

    def describe(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "version": ort.__version__, "device": self.target.device,
                "providers": ort.get_available_providers()}

    def compile(self, model_path: str) -> ort.InferenceSession:
        session = ort.InferenceSession(
            model_path, self.options, providers=[self.provider],
            disabled_optimizers=self.disabled_optimizers or None,
        )
        if session.get_providers()[0] != self.provider:  # never let ORT fall back to another device
            raise DeviceUnavailable(f"ONNX Runtime did not place the session on {self.provider}")
        return session

    def run(self, compiled: ort.InferenceSession, inputs: Tensors) -> Tensors:
        names = [output.name for output in compiled.get_outputs()]
        feeds = {item.name: inputs[item.name] for item in compiled.get_inputs()}
        return dict(zip(names, compiled.run(names, feeds)))

    def is_unsupported(self, error: Exception) -> bool:
        text = str(error)
        return isinstance(error, Unsupported) or any(marker in text for marker in UNSUPPORTED_MARKERS)


def create(target: Target, **options: Any) -> OrtBackend:
    """``options``: constructor arguments, e.g. ``disabled_optimizers=["FuseReluClip"]``."""
    return OrtBackend(target, **options)
