"""Which optimization makes a finding: switch them off one at a time, then together, and shrink.

What each runtime lets us switch off (asked of the runtime for the model at hand, in its worker):

- ONNX Runtime: ``InferenceSession(disabled_optimizers=[...])`` takes graph-transformer names and
  rewrite-rule names. Transformers are listed from ORT's own log for the model; rules are not logged,
  so they come from ``ORT_RULES`` (ORT's source, ``GenerateRewriteRules``). ORT ignores unknown
  names silently. ``O0`` (ORT_DISABLE_ALL) has nothing left to switch.
- TVM (Relax): ``PassContext(disabled_pass=[...])`` with every pass that ran in ``tvm.compile`` for
  the model. A pass the build cannot do without (LegalizeOps) makes the build fail when disabled:
  reported as not switchable.
- OpenVINO: release builds have no per-transformation switch (``OV_SWITCHES`` lists the coarse
  compile properties tried instead).

The search: every switch alone; if none makes the finding go away, all switchable ones together
and, when that works, a greedy shrink to a set from which no switch can be dropped; otherwise the
plain answer that no switch explains it.
"""

from __future__ import annotations

import select
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from higen.backends.base import Outcome
from higen.backends.pool import BackendPool
from higen.oracle import first_meaningful_line, normalize_message
from higen.workers import POLL_INTERVAL_S, WorkerFailure

#: ORT's rewrite rules by the rule-based transformer that runs them (names as ``RewriteRule(name)``).
ORT_RULES = {
    "Level1_RuleBasedTransformer": [
        "EliminateIdentity", "EliminateSlice", "EliminateUnsqueeze", "EliminateDropout", "ExpandElimination",
        "CastElimination", "CastChainElimination", "PreShapeNodeElimination", "NoopElimination", "DivMulFusion",
        "FuseReluClip", "GemmSumFusion", "GemmTransposeFusion", "NotWhereFusion", "ConvAddFusion", "ConvMulFusion",
        "ConvBNFusion", "Pad_Fusion", "MatMul_BatchNormalization_Fusion", "LabelEncoderFusion"],
    "Level2_RuleBasedTransformer": ["ClipQuantRewrite", "ReluQuantRewrite", "GemmTransposeFusion"],
}
#: OpenVINO CPU compile properties that switch an optimization off (KEY=VALUE).
OV_SWITCHES = ("SNIPPETS_MODE=DISABLE", "EXECUTION_MODE_HINT=ACCURACY")
#: Names a TVM pass instrument sees that are containers, not passes one can disable.
PIPELINE_WRAPPERS = {"_pipeline", "sequential"}


def options_for(runtime: str, switched_off: list[str]) -> dict[str, Any]:
    """Backend constructor arguments that switch ``switched_off`` off."""
    if runtime == "ort":
        return {"disabled_optimizers": list(switched_off)}
    if runtime == "tvm":
        return {"disabled_passes": list(switched_off)}
    if runtime == "ov":
        return {"properties": dict(item.split("=", 1) for item in switched_off)}
    raise ValueError(f"no optimization switches for runtime {runtime!r}")


class SwitchablePool(BackendPool):
    """A BackendPool whose workers (:mod:`higen.numerics.switch_serve`) also take per-request
    backend options, and list the switches a target offers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for worker in self.workers.values():
            worker.spec = replace(worker.spec, module="higen.numerics.switch_serve")

    def run_with(self, target: str, model_path: Path, inputs_path: Path, out_dir: Path,
                 options: dict[str, Any]) -> Outcome:
        worker = self.workers[target]
        outputs = str(out_dir / f"{target.replace(':', '_')}.npz")
        began = time.perf_counter()
        worker.submit({"model": str(model_path), "inputs": str(inputs_path), "outputs": outputs,
                       "options": options}, self.timeout_s)
        while (outcome := self._poll(target, began, outputs)) is None:
            select.select([worker.fileno()], [], [], POLL_INTERVAL_S)
        return outcome

    def switches(self, target: str, model_path: Path) -> dict[str, Any]:
        """The switches ``target`` offers for this model; none, said plainly, when listing them (which
        compiles the model) crashes or hangs the worker, as a compile-time crash does."""
        try:
            return self.workers[target].call({"op": "switches", "model": str(model_path)}, self.timeout_s)
        except WorkerFailure as failure:
            return {"switches": [], "note": f"listing the switches compiles the model, and the worker failed "
                                            f"({failure.kind}: {failure.detail})"}


def _failure_key(outcome: Outcome) -> str:
    return f"{outcome.status}|{normalize_message(first_meaningful_line(outcome.message or outcome.log_tail))}"


def search(pool: SwitchablePool, target: str, model_path: Path, inputs_path: Path, work: Path,
           baseline: Outcome, agrees: Callable[[Outcome], bool], budget_s: float = 600.0) -> dict[str, Any]:
    """Find the switches of ``target`` whose being off makes the finding go away.

    ``baseline``: the target's outcome with nothing switched off (the finding); ``agrees(outcome)``:
    whether an outcome no longer shows the finding (runs and matches its partner)."""
    runtime = target.split(":")[0].partition("@")[0]  # ort@1.20.1:cpu:O3 -> ort
    offered = pool.switches(target, model_path)
    candidates = offered.get("switches", [])
    result: dict[str, Any] = {"target": target, "note": offered.get("note", ""), "candidates": len(candidates),
                              "single_fixes": [], "not_switchable": [], "tried": 0, "smallest": None}
    if offered.get("modified"):
        result["modified_this_model"] = offered["modified"]
    if not candidates:
        result["answer"] = f"nothing to switch off on {target}: {offered.get('note', '')}"
        return result
    deadline = time.monotonic() + budget_s
    work.mkdir(parents=True, exist_ok=True)
    baseline_key = None if baseline.ok else _failure_key(baseline)

    def attempt(switched_off: list[str]) -> str:
        """fixed | still | broken (the build or run fails otherwise than the finding)."""
        result["tried"] += 1
        outcome = pool.run_with(target, model_path, inputs_path, work, options_for(runtime, switched_off))
        if outcome.ok:
            return "fixed" if agrees(outcome) else "still"
        return "still" if _failure_key(outcome) == baseline_key else "broken"

    for switch in candidates:
        if time.monotonic() > deadline:
            result["budget_exhausted"] = True
            break
        verdict = attempt([switch])
        if verdict == "fixed":
            result["single_fixes"].append(switch)
        elif verdict == "broken":
            result["not_switchable"].append(switch)
    groups = offered.get("groups", {})
    if result["single_fixes"]:  # the most specific: a rule rather than the transformer that runs it
        specific = [s for s in result["single_fixes"] if s not in groups] or result["single_fixes"]
        result["smallest"] = specific[:1]
        result["answer"] = (f"switching off {specific[0]} alone makes the finding go away"
                            + (f" (so do: {', '.join(s for s in result['single_fixes'] if s != specific[0])})"
                               if len(result["single_fixes"]) > 1 else ""))
        return result
    usable = [s for s in candidates if s not in result["not_switchable"]]
    if result.get("budget_exhausted"):
        result["answer"] = (f"search budget ({budget_s:g} s) spent after {result['tried']} of {len(candidates)} "
                            "switches, none of which explains it: no answer (raise --budget)")
        return result
    if not usable or attempt(usable) != "fixed":
        result["answer"] = ("no single switch explains it, and with every switchable one off "
                            f"({len(usable)}) the finding stays: it lies in a kernel or in a step that cannot "
                            "be switched off")
        return result
    kept = list(usable)
    for switch in usable:  # greedy shrink: drop every switch the fix does not need
        if time.monotonic() > deadline:
            result["budget_exhausted"] = True
            break
        trial = [s for s in kept if s != switch]
        if trial and attempt(trial) == "fixed":
            kept = trial
    result["smallest"] = kept
    result["answer"] = (f"no single switch explains it; switching off these {len(kept)} together does: "
                        f"{', '.join(kept)}" + (" (not shrunk further: budget spent)" if result.get("budget_exhausted")
                                                else ""))
    return result
