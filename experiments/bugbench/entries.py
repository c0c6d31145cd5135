"""Benchmark entries: one folder per bug, ``<runtime>-<issue>/`` with ``bug.toml`` and ``repro.py``.

``bug.toml`` keys (README.md explains them): ``id``, ``issue``, ``url``, ``title``, ``runtime``,
``affected``, ``fixed``, ``symptom`` (crash | wrong-result | error), ``description``, ``tier`` (real |
injected), ``target`` (device and level the bug shows on, e.g. ``cpu:O3``), ``ops`` (op types a case
must contain), and optionally ``switch`` (backend options that make the affected release agree with
the fixed one: the credit's localization), ``message`` (a regular expression a crash/error message
must match), ``reference_target`` (the target judging which release is right; default ORT O0 of the
main environment), ``split`` (``train`` | ``heldout``: which half of the benchmark an entry is in;
strategies are tuned on ``train`` and reported on ``heldout``). ``repro.py`` defines ``build() -> (onnx.ModelProto, {input name: array})`` from a
fixed seed; it is used only to validate the entry, never to seed a fuzzer.
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent
SYMPTOMS = ("crash", "wrong-result", "error")
TIERS = ("real", "injected")
SPLITS = ("train", "heldout")
REQUIRED = ("issue", "url", "title", "runtime", "affected", "fixed", "symptom", "description", "tier", "target", "ops",
            "split")


class EntryError(ValueError):
    """A malformed entry; the message names its bug.toml and what is wrong."""


@dataclass(frozen=True)
class Entry:
    id: str
    path: Path
    issue: int
    url: str
    title: str
    runtime: str
    affected: str
    fixed: str
    symptom: str
    description: str
    tier: str
    target: str
    ops: tuple[str, ...]
    split: str
    switch: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    reference_target: str = "ort:cpu:O0"
    injected: dict[str, Any] = field(default_factory=dict)

    @property
    def full_target(self) -> str:
        """``ort:cpu:O3``: the runtime key and the entry's device and level."""
        return f"{self.runtime}:{self.target}"


def load_entry(folder: Path) -> Entry:
    path = Path(folder) / "bug.toml"
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise EntryError(f"{path}: {error}") from error
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise EntryError(f"{path} lacks {', '.join(missing)}")
    if data["symptom"] not in SYMPTOMS or data["tier"] not in TIERS or data["split"] not in SPLITS:
        raise EntryError(f"{path}: symptom must be one of {SYMPTOMS}, tier one of {TIERS} and split one of {SPLITS}")
    if not (Path(folder) / "repro.py").is_file():
        raise EntryError(f"{folder} has no repro.py")
    known = {f for f in Entry.__dataclass_fields__} - {"id", "path"}
    extra = sorted(set(data) - known - {"id"})
    if extra:
        raise EntryError(f"{path}: unknown keys {', '.join(extra)}")
    fields = {k: v for k, v in data.items() if k in known}
    fields["ops"] = tuple(fields["ops"])
    return Entry(id=data.get("id", Path(folder).name), path=Path(folder), **fields)


def load_entries(root: Path = ROOT, only: list[str] | None = None, split: str | None = None) -> list[Entry]:
    """Every entry under ``root`` (sorted by folder name), or those whose id is in ``only``, or those
    of one ``split``."""
    entries = [load_entry(p.parent) for p in sorted(Path(root).glob("*/bug.toml"))]
    if split:
        entries = [e for e in entries if e.split == split]
    if only:
        unknown = sorted(set(only) - {e.id for e in entries})
        if unknown:
            raise EntryError(f"no benchmark entry {', '.join(unknown)}; known: {', '.join(e.id for e in entries)}")
        entries = [e for e in entries if e.id in only]
    return entries


def load_builder(entry: Entry) -> Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    spec = importlib.util.spec_from_file_location(f"bugbench_repro_{entry.id.replace('-', '_')}",
                                                  entry.path / "repro.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build


def write_case(model: onnx.ModelProto, inputs: dict[str, np.ndarray], out_dir: Path | str) -> Path:
    """Write ``model.onnx`` and ``inputs.npz`` (plain arrays, no pickles) after checking the model."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = with_output_types(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out / "model.onnx"))
    np.savez(out / "inputs.npz", **inputs)
    return out


def with_output_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """Graph outputs declared without a shape (``make_tensor_value_info(name, type, None)``) get the
    type ONNX shape inference computes, so repros need not spell output shapes out."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for output in model.graph.output:
        if not output.type.tensor_type.HasField("shape") and output.name in known:
            output.type.CopyFrom(known[output.name].type)
    return model


def write_repro(entry: Entry, out_dir: Path | str) -> Path:
    """Build the entry's minimal model and inputs into ``out_dir``."""
    model, inputs = load_builder(entry)()
    return write_case(model, inputs, out_dir)


def repro_main(build: Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]], argv: list[str]) -> None:
    """``python repro.py [OUT_DIR]``: write model.onnx and inputs.npz (default: the current folder)."""
    out = write_case(*build(), argv[1] if len(argv) > 1 else ".")
    print(f"wrote {out / 'model.onnx'} and {out / 'inputs.npz'}")
