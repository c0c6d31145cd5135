"""``higen repro CASE``: run a saved bug case again on its targets with the installed runtimes; a
target pinned to a release (``ort@1.20.1:cpu:O3``, version-differential cases) runs that release
from the runtime cache, and one not installed there is a one-line error naming ``higen runtimes add``.

The targets run in crash-isolated workers (:class:`BackendPool`), the reference is the saved
``outputs/torch_cpu.npz``, and :func:`higen.oracle.judge` decides with the case's recorded pairs,
tolerances and NaN policy. The case *reproduces* when its signature is among the new findings.
Exit status: 0 reproduces, 1 no longer reproduces, 2 the case cannot be used (one line says why).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from rich.console import Console
from rich.table import Table

from higen.backends.base import REFERENCE, Outcome, Target
from higen.backends.pool import BackendPool
from higen.bugs.case import BugCase, CaseError, load_case, producers
from higen.oracle import Judgement, Tolerance, judge
from higen.tensors import Tensors, load_tensors, scratch_dir
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


@dataclass
class Trial:
    """One run of a model on some targets, judged."""

    judgement: Judgement
    outcomes: dict[str, Outcome]
    outputs: dict[str, Tensors] = field(default_factory=dict)

    @property
    def signatures(self) -> list[str]:
        return [f.signature for f in self.judgement.findings]


def run_and_judge(pool: BackendPool, model_path: Path, inputs_path: Path, work: Path, targets: list[str],
                  reference: Tensors | None, pairs: list[tuple[str, str]], tolerances: dict[str, Tolerance],
                  nan_policy: str) -> Trial:
    """Run ``model_path`` on ``targets`` of ``pool`` and judge the outcomes like the engine does."""
    outcomes = pool.run(model_path, inputs_path, work, only=targets)
    outputs = {name: load_tensors(o.outputs_path) for name, o in outcomes.items() if o.ok}
    if reference is not None:
        outputs[REFERENCE] = reference
    model = onnx.load(str(model_path), load_external_data=False)
    judgement = judge(outcomes, outputs, pairs, producers(model), tolerances, pool.internal_precision(), nan_policy)
    return Trial(judgement, outcomes, outputs)


def user_case(path: str | Path) -> BugCase:
    """Load a case for a command; a bad case becomes one UserError line."""
    from higen.main import UserError

    try:
        return load_case(path)
    except CaseError as error:
        raise UserError(str(error)) from error


def replay(case: BugCase, timeout_s: float = 60.0, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB) -> Trial:
    """Run the case on all its targets with the installed runtimes; the reference is the saved one."""
    work = scratch_dir("higen-repro-")
    try:
        with BackendPool([Target.parse(t) for t in case.targets], work / "logs", timeout_s, memory_limit_mb) as pool:
            return run_and_judge(pool, case.model_path, case.inputs_path, work, case.targets,
                                 load_tensors(case.reference_path), case.pairs, case.tolerances, case.nan_policy)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(case: BugCase, trial: Trial, console: Console) -> dict[str, Any]:
    table = Table("target", "status", "stage", "compile s", "run s", "message", title=f"replay of {case.path}")
    for name, outcome in trial.outcomes.items():
        table.add_row(name, outcome.status, outcome.stage, f"{outcome.compile_s:.3f}", f"{outcome.run_s:.4f}",
                      (outcome.message or outcome.error_type).strip().split("\n")[0][:100])
    console.print(table)
    recorded = [f["signature"] for f in case.meta["findings"]]
    every = []
    for finding in case.meta["findings"]:  # every finding of the case, each with its root cause
        shows = finding["signature"] in trial.signatures
        cause = (finding.get("root_cause") or {}).get("key", "")
        every.append({"signature": finding["signature"], "root_cause": cause, "reproduces": shows})
        mark = "[red]shows[/red]" if shows else "[green]gone[/green]"
        console.print(f"  {mark}  {finding['signature']}" + (f"\n         root cause: {cause}" if cause else ""),
                      soft_wrap=True, highlight=False)
    for signature in trial.signatures:
        if signature not in recorded:
            console.print(f"  [yellow]new[/yellow]   {signature}", soft_wrap=True)
    reproduces = case.signature in trial.signatures
    described = case.meta.get("versions", {}).get("targets", {})
    return {"case": str(case.path), "signature": case.signature, "reproduces": reproduces,
            "findings": trial.signatures, "recorded": every,
            "statuses": {t: o.status for t, o in trial.outcomes.items()},
            "recorded_versions": {t: described.get(t, {}).get("version") for t in trial.outcomes}}


def command_repro(argv: list[str]) -> int:
    from higen.main import OneLineParser

    parser = OneLineParser(prog="higen repro", description="Replay a bug case; exit 0 if it still reproduces, 1 if not.")
    parser.add_argument("case", type=Path, help="a bug case folder (bug_cases/<case>, or its reduced/)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per target")
    parser.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_LIMIT_MB)
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    case = user_case(args.case)
    console = Console()
    trial = replay(case, args.timeout, args.memory_limit_mb)
    result = report(case, trial, console)
    if result["reproduces"]:
        console.print(f"[bold red]REPRODUCES[/bold red]: {case.signature}", soft_wrap=True)
    else:
        console.print(f"[bold green]NO LONGER REPRODUCES[/bold green]: {case.signature}", soft_wrap=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["reproduces"] else 1
