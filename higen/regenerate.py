"""``higen regenerate RUN_DIR INDEX [--out DIR]`` (the command is :mod:`higen.cli.regenerate`): rebuild
test INDEX of a run exactly.

A test's model and inputs depend only on its config and seed (the generator worker seeds every
random generator from the test's seed and bounds NNSmith's input search by steps, not wall time:
``higen.generation.nnsmith_build``). ``training.log`` records each test's whole config, and the run
folder its op support (``allowed_ops.json``), so a logged test, a generator hang
(``generator-timeout``) included, can be built again in a fresh generator worker.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from higen.errors import UserError
from higen.generation.client import GEN_TIMEOUT_S, Generator, GenResult
from higen.generation.config import ConfigError, GenConfig
from higen.tensors import load_tensors


def logged_config(run_dir: Path, index: int) -> GenConfig:
    """The config of test ``index`` as ``training.log`` recorded it (raises UserError if absent)."""
    path = run_dir / "training.log"
    if not path.is_file():
        raise UserError(f"{run_dir}: no training.log there; pass a run folder (runs/<N>)")
    found: dict[str, Any] | None = None
    for line in path.read_text().splitlines():
        event = json.loads(line) if line.endswith("}") else {}
        if event.get("event") == "test" and event.get("index") == index:
            found = event
    if found is None:
        raise UserError(f"{path}: no test {index} logged; indices are in its \"test\" lines")
    if "config" not in found:
        raise UserError(f"{path}: test {index} was logged without its config (a run of an older HiGen)")
    try:
        return GenConfig.from_json(found["config"])
    except ConfigError as error:
        raise UserError(f"{path}: test {index} has an invalid config: {error}") from error


def regenerate(config: GenConfig, out_dir: Path, allowed: Path | None = None,
               timeout_s: float = GEN_TIMEOUT_S) -> GenResult:
    """Build ``config`` into ``out_dir`` (model.onnx, inputs.npz, reference.npz) in a fresh worker."""
    generator = Generator(out_dir / "logs", timeout_s)
    generator.allowed_path = allowed
    try:
        generator.start()
        return generator.generate(config, out_dir)
    finally:
        generator.close()


def case_digest(directory: Path) -> dict[str, str]:
    """sha256 of a test's model file and of its inputs' names, dtypes, shapes and bytes (an .npz file's
    own bytes hold its write time)."""
    digest = hashlib.sha256()
    for name, value in sorted(load_tensors(directory / "inputs.npz").items()):
        digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return {"model": hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest(), "inputs": digest.hexdigest()}
