"""``higen regenerate RUN_DIR INDEX [--out DIR]``: rebuild test INDEX of a run exactly.

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

from higen.generation.client import GEN_TIMEOUT_S, Generator, GenResult
from higen.generation.config import ConfigError, GenConfig
from higen.tensors import load_tensors


def logged_config(run_dir: Path, index: int) -> GenConfig:
    """The config of test ``index`` as ``training.log`` recorded it (raises UserError if absent)."""
    from higen.main import UserError

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


def command_regenerate(argv: list[str]) -> int:
    from higen.main import OneLineParser

    parser = OneLineParser(prog="higen regenerate", description="Rebuild a logged test from its config and seed.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("index", type=int, help="the test's index in training.log")
    parser.add_argument("--out", type=Path, help="where to write it (default RUN_DIR/regenerated/INDEX)")
    parser.add_argument("--timeout", type=float, default=GEN_TIMEOUT_S, help="seconds before generation is given up")
    args = parser.parse_args(argv)
    config = logged_config(args.run_dir, args.index)
    out = args.out or args.run_dir / "regenerated" / str(args.index)
    allowed = args.run_dir / "allowed_ops.json"
    result = regenerate(config, out, allowed if allowed.is_file() else None, args.timeout)
    (out / "config.json").write_text(json.dumps(config.to_json(), indent=1) + "\n")
    if not result.valid:
        print(f"test {args.index} (seed {config.seed}) is invalid again: {result.reason}")
        return 1
    digest = case_digest(out)
    print(f"test {args.index} (seed {config.seed}) rebuilt in {out}: model sha256 {digest['model'][:16]}, "
          f"inputs sha256 {digest['inputs'][:16]}")
    return 0
