"""Files a case carries for use outside HiGen: ``repro.py`` (from :mod:`higen.bugs.repro_template`,
with the case's facts filled in) and, for TVM targets, ``model_folded.onnx`` (what TVM's frontend gets)."""

from __future__ import annotations

import pprint
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from higen.backends.base import REFERENCE
from higen.bugs.case import REFERENCE_FILE, file_name
from higen.onnx_fold import fold_integer_constants
from higen.oracle import DEFAULT_TOLERANCES, EXACT, Tolerance, first_meaningful_line
from higen.tensors import load_tensors

TEMPLATE = Path(__file__).with_name("repro_template.py")
PLACEHOLDER = "CASE: dict = {}\n"
FOLDED_MODEL = "model_folded.onnx"
FAILURES = ("crash", "error", "timeout")


def bug_facts(directory: Path, meta: dict[str, Any], finding: dict[str, Any]) -> dict[str, Any]:
    """What the standalone script checks: the finding, and for a mismatch the tolerance that applied."""
    facts = {"verdict": finding["verdict"], "targets": list(finding["targets"]), "detail": finding["detail"][:300],
             "output": finding.get("output", "")}
    if finding["verdict"] in FAILURES:
        outcome = meta["outcomes"].get(finding["targets"][-1], {})
        facts.update(stage=outcome.get("stage", ""), signal=outcome.get("signal"),
                     error_type=outcome.get("error_type", ""),
                     message=first_meaningful_line(outcome.get("message", ""))[:300])
        return facts
    left = finding["targets"][0]
    path = directory / (meta.get("reference_file", REFERENCE_FILE) if left == REFERENCE
                        else f"outputs/{file_name(left)}.npz")
    dtype = ""
    if path.exists() and finding.get("output"):
        dtype = load_tensors(path).get(finding["output"], np.zeros(0)).dtype.name
    described = meta.get("versions", {}).get("targets", {})
    narrowed = None
    for target in finding["targets"]:
        narrowed = narrowed or described.get(target, {}).get("internal_precision", {}).get(dtype)
    which = narrowed or dtype
    recorded = meta.get("oracle", {}).get("tolerances", {}).get(which)
    tolerance = Tolerance(**recorded) if recorded else DEFAULT_TOLERANCES.get(which, EXACT)
    facts["tolerance"] = [tolerance.rtol, tolerance.atol]
    return facts


def script_case(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    finding = next(f for f in meta["findings"] if f["signature"] == meta["signature"])
    targets = [t for t in finding["targets"] if t != REFERENCE]
    described = meta.get("versions", {}).get("targets", {})
    case = {"case": meta.get("case", directory.name), "signature": meta["signature"], "model": "model.onnx",
            "inputs": "inputs.npz", "reference": REFERENCE,
            "reference_file": meta.get("reference_file", REFERENCE_FILE), "targets": targets,
            "versions": {t: f"{described.get(t, {}).get('runtime', '?')} {described.get(t, {}).get('version', '?')}"
                         for t in targets},
            "bug": bug_facts(directory, meta, finding)}
    if any(t.startswith("tvm:") for t in targets):
        case["tvm_model"] = FOLDED_MODEL
    return case


def write_case_extras(directory: Path, meta: dict[str, Any]) -> None:
    """Write ``repro.py`` (and ``model_folded.onnx`` when a TVM target is involved) into ``directory``."""
    directory = Path(directory)
    case = script_case(directory, meta)
    if "tvm_model" in case:
        onnx.save(fold_integer_constants(onnx.load(str(directory / "model.onnx"))), directory / FOLDED_MODEL)
    source = TEMPLATE.read_text()
    if PLACEHOLDER not in source:
        raise RuntimeError(f"{TEMPLATE} lost its line {PLACEHOLDER.strip()!r}")
    filled = f"CASE: dict = {pprint.pformat(case, width=110, sort_dicts=False)}\n"
    (directory / "repro.py").write_text(source.replace(PLACEHOLDER, filled, 1))
