"""Find an entry's affected and fixed releases: run its repro on many releases of its runtime and
show, per release, what the target did and how far it is from the reference. Used when adding an
entry (``bugbench.py --probe ID --versions ...``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from higen.oracle import DEFAULT_TOLERANCES, compare_tensors

from .entries import Entry, write_repro
from .replay import ReleasePool, Run


def difference(expected: Run, actual: Run) -> str:
    """Worst comparison verdict over the outputs, as one short string."""
    if expected.outputs is None or actual.outputs is None:
        return "-"
    notes = []
    for name, value in expected.outputs.items():
        verdict, detail, _, _ = compare_tensors(value, actual.outputs[name], DEFAULT_TOLERANCES)
        if verdict != "ok":
            notes.append(f"{name}: {verdict} {detail}")
    return "; ".join(notes) or "agrees"


def probe(entry: Entry, versions: list[str], timeout_s: float = 60.0) -> list[tuple[str, str, str]]:
    """(release, what the target did, difference from the reference) per release."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bugbench-probe-") as tmp:
        work = Path(tmp)
        case = write_repro(entry, work / "case")
        model, inputs = case / "model.onnx", case / "inputs.npz"
        ref_runtime = entry.reference_target.split(":")[0]
        with ReleasePool(ref_runtime, "", [entry.reference_target], work / "ref", timeout_s) as pool:
            reference = pool.run(entry.reference_target, model, inputs)
        rows.append(("reference " + entry.reference_target, reference.describe(), ""))
        for version in versions:
            with ReleasePool(entry.runtime, version, [entry.full_target], work / version, timeout_s) as pool:
                run = pool.run(entry.full_target, model, inputs)
                switched = pool.run(entry.full_target, model, inputs, entry.switch) if entry.switch else None
            note = difference(reference, run)
            if switched is not None:
                note += f" | with {entry.switch}: {switched.describe()}, {difference(reference, switched)}"
            rows.append((version, run.describe(), note))
    return rows
