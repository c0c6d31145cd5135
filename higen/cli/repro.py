"""``higen repro CASE``: replay a saved bug case (:func:`higen.bugs.repro.replay`) and say whether its
signature still shows. Exit status: 0 reproduces, 1 no longer reproduces, 2 the case cannot be used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from higen.bugs.case import BugCase, load_case
from higen.bugs.repro import replay
from higen.cli.parsing import OneLineParser
from higen.execute import Execution
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def report(case: BugCase, trial: Execution, console: Console) -> dict[str, Any]:
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
    parser = OneLineParser(prog="higen repro", description="Replay a bug case; exit 0 if it still reproduces, 1 if not.")
    parser.add_argument("case", type=Path, help="a bug case folder (bug_cases/<case>, or its reduced/)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per target")
    parser.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_LIMIT_MB)
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    case = load_case(args.case)
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
