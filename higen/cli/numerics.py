"""``higen numerics RUN_DIR --out DIR``: the per-operator instability report of a run
(:mod:`higen.numerics.summary` counts, :mod:`higen.numerics.report` writes)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from higen.cli.parsing import OneLineParser
from higen.numerics.report import write_report
from higen.numerics.summary import build_summary, training_summary


def numerics_parser() -> OneLineParser:
    p = OneLineParser(prog="higen numerics", description="Per-operator NaN/Inf/overflow/underflow/error report of a run.")
    p.add_argument("run_dir", type=Path, help="a run directory (runs/<N>)")
    p.add_argument("--out", type=Path, help="report folder (default RUN_DIR/numerics-report)")
    p.add_argument("--rerun-cases", action="store_true",
                   help="re-run the saved bug cases even when the run recorded numerics.jsonl")
    p.add_argument("--targets", help="comma-separated targets to re-run cases on (default: each case's own)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--memory-limit-mb", type=int, default=8192)
    return p


def command_numerics(argv: list[str]) -> int:
    args = numerics_parser().parse_args(argv)
    console = Console(stderr=True)
    targets = [t for t in args.targets.split(",") if t] if args.targets else None
    summary = build_summary(args.run_dir, args.rerun_cases, targets, args.timeout, args.memory_limit_mb, console)
    context = {}
    campaign = training_summary(args.run_dir)
    if campaign:
        context["Campaign (training.log)"] = (f"{campaign['tests']} tests, verdicts "
                                              + ", ".join(f"{k} {v}" for k, v in sorted(campaign["verdicts"].items())))
    written = write_report(summary, args.out or args.run_dir / "numerics-report", context)
    console.print(f"{summary.tests} records, {len(summary.op_totals())} operators, "
                  f"{sum(summary.disagreements.values())} disagreeing nodes -> {written[0].parent}")
    return 0
