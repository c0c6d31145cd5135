"""Replay-based credit: does a saved case (``model.onnx`` + ``inputs.npz``) expose a benchmark bug?

The case runs, crash-isolated, on the entry's *affected* release and on its *fixed* release (same
target), and on an independent reference target (default: ONNX Runtime O0 of the main environment).
It is credited to the entry when all of these hold:

1. **Ops:** the model holds every op type the entry lists (``ops``). A difference caused elsewhere
   in a graph without those ops cannot be this bug.
2. **Symptom on the affected release:** ``crash`` -> the affected worker crashes or hangs;
   ``error`` -> it raises (and, when the entry gives ``message``, the error text matches it);
   ``wrong-result`` -> it runs and an output differs from the fixed release's beyond the oracle's
   tolerance (:func:`higen.oracle.compare_tensors`, HiGen's default tolerances).
3. **Fixed release clean:** it runs, and for ``wrong-result`` its outputs agree with the reference
   target's (so the fixed release is right, not merely different); when the reference target cannot
   run the case, with the PyTorch reference a HiGen case saved.
4. **Localized (when the entry names a ``switch``):** the affected release with that switch (e.g.
   ORT ``disabled_optimizers=["PadFusion"]``) no longer shows the symptom and agrees with the fixed
   release. This ties the difference to the transformation the bug lives in.

Why these rules: the affected and fixed releases are adjacent (the last release with the bug and
the first without), which keeps unrelated fixes between them few, but any other fix in that window
would otherwise credit every case it touches to every entry of that pair. The op gate, the message
and the switch each cut that down; entries without a switch (kernel bugs of OpenVINO) rely on the op
gate and on the fixed release agreeing with an independent reference. See README.md.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from higen.bugs.case import REFERENCE_FILE, refuse_pickles
from higen.oracle import DEFAULT_TOLERANCES, Verdict, compare_tensors
from higen.tensors import Tensors, load_tensors

from .entries import Entry
from .replay import ReleasePool, Run

#: OpenVINO CPU computes float64 in float32: judge its float64 outputs with float32's tolerance.
PRECISION = {"ov": {"float64": "float32"}}


@dataclass
class Credit:
    """The verdict for one case and one entry, with what each check saw."""

    entry: str
    credited: bool
    reason: str
    affected: str = ""
    fixed: str = ""
    checks: dict[str, bool | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def op_types(model_path: Path) -> set[str]:
    """Op types of the model's main graph (reading the protobuf computes nothing)."""
    return {node.op_type for node in onnx.load(str(model_path), load_external_data=False).graph.node}


def differs(left: Tensors, right: Tensors, runtime: str) -> bool:
    """Whether any output of two successful runs disagrees beyond the oracle's tolerance."""
    if set(left) != set(right):
        return True
    precision = PRECISION.get(runtime, {})
    for name, value in left.items():
        verdict = compare_tensors(value, right[name], DEFAULT_TOLERANCES, precision.get(value.dtype.name))[0]
        if verdict != Verdict.OK:
            return True
    return False


def saved_reference(case: Path) -> Tensors | None:
    """The PyTorch reference a HiGen case saved (``outputs/torch_cpu.npz``), when there is one."""
    path = case / REFERENCE_FILE
    if not path.is_file():
        return None
    refuse_pickles(case)
    return load_tensors(path)


def shows_failure(run: Run, entry: Entry) -> bool:
    wanted = ("crash", "timeout") if entry.symptom == "crash" else ("error",)
    if run.outcome.status not in wanted:
        return False
    text = f"{run.outcome.message}\n{run.outcome.log_tail}\n{run.outcome.signal or ''}"
    return not entry.message or re.search(entry.message, text) is not None


class Creditor:
    """Keeps one worker pool per release open, so many cases can be credited against many entries."""

    def __init__(self, work: Path | None = None, timeout_s: float = 60.0):
        self._tmp = tempfile.TemporaryDirectory(prefix="bugbench-credit-") if work is None else None
        self.work = Path(work or self._tmp.name)
        self.timeout_s = timeout_s
        self.pools: dict[tuple[str, str, str, str], ReleasePool] = {}

    def __enter__(self) -> "Creditor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.__exit__(None, None, None)
        self.pools.clear()
        if self._tmp is not None:
            self._tmp.cleanup()

    def run(self, runtime: str, version: str, target: str, case: Path, options: dict | None = None,
            defect: str = "") -> Run:
        key = (runtime, version, target, defect)
        if key not in self.pools:
            folder = self.work / f"{runtime}-{version or 'installed'}-{target.replace(':', '_')}-{defect}"
            self.pools[key] = ReleasePool(runtime, version, [target], folder, self.timeout_s, defect).__enter__()
        return self.pools[key].run(target, case / "model.onnx", case / "inputs.npz", options)

    def agrees_with_reference(self, case: Path, fixed: Run, entry: Entry) -> bool:
        """The fixed release's outputs against the reference target's, or, when that target cannot
        run the case (no kernel for a dtype), against the PyTorch reference the case saved."""
        reference = self.run(entry.reference_target.split(":")[0], "", entry.reference_target, case)
        expected = reference.outputs if reference.outcome.ok else saved_reference(case)
        return expected is not None and not differs(fixed.outputs, expected, entry.runtime)

    def credit(self, case: Path | str, entry: Entry) -> Credit:
        """Decide whether the case folder exposes the entry's bug (module docstring: the rules)."""
        case = Path(case)
        missing = sorted(set(entry.ops) - op_types(case / "model.onnx"))
        if missing:
            return Credit(entry.id, False, f"case lacks {', '.join(missing)}", checks={"ops": False})
        target = entry.full_target
        defect = entry.injected.get("defect", "")
        affected = self.run(entry.runtime, entry.affected, target, case, defect=defect)
        fixed = self.run(entry.runtime, entry.fixed, target, case)
        result = Credit(entry.id, False, "", affected.describe(), fixed.describe(), {"ops": True})
        if entry.symptom == "wrong-result":
            result.checks["affected shows bug"] = (affected.outcome.ok and fixed.outcome.ok
                                                   and differs(affected.outputs, fixed.outputs, entry.runtime))
            result.checks["fixed clean"] = fixed.outcome.ok and self.agrees_with_reference(case, fixed, entry)
        else:
            result.checks["affected shows bug"] = shows_failure(affected, entry)
            result.checks["fixed clean"] = fixed.outcome.ok
        if entry.switch and result.checks["affected shows bug"]:
            switched = self.run(entry.runtime, entry.affected, target, case, entry.switch, defect)
            result.checks["localized"] = switched.outcome.ok and fixed.outcome.ok and not differs(
                switched.outputs, fixed.outputs, entry.runtime)
        failed = [name for name, ok in result.checks.items() if ok is False]
        result.credited = not failed
        result.reason = "credited" if not failed else "not: " + ", ".join(failed)
        return result


def credit(case: Path | str, entry: Entry, timeout_s: float = 60.0) -> Credit:
    """One-off credit of one case for one entry (starts and stops its own workers)."""
    with Creditor(timeout_s=timeout_s) as creditor:
        return creditor.credit(case, entry)
