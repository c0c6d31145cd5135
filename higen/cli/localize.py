"""``higen localize CASE``: the first node where a case's two targets part ways, and the optimization
behind it (:func:`higen.numerics.localize.localize_case`); writes ``localization.json``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from higen.cli.parsing import OneLineParser
from higen.numerics.localize import localize_case


def localize_parser() -> OneLineParser:
    p = OneLineParser(prog="higen localize", description="Find the first diverging node and the culprit optimization of a bug case.")
    p.add_argument("case", type=Path, help="a bug case folder (bug_cases/<case>)")
    p.add_argument("--targets", help="the two targets to compare (default: the finding's)")
    p.add_argument("--no-pass-search", action="store_true", help="only localise the node")
    p.add_argument("--budget", type=float, default=600.0, help="seconds the pass search may take per target")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--memory-limit-mb", type=int, default=8192)
    return p


def command_localize(argv: list[str]) -> int:
    args = localize_parser().parse_args(argv)
    targets = [t for t in args.targets.split(",") if t] if args.targets else None
    report = localize_case(args.case, targets, not args.no_pass_search, args.timeout, args.memory_limit_mb, args.budget)
    console = Console()
    console.print(f"{report['case']}: {' vs '.join(report['compared'])}"
                  + (f" (proxy for torch:cpu: {report['proxy']['target']})" if report.get("proxy") else ""))
    console.print(report.get("answer", ""))
    console.print(f"written: {Path(args.case) / 'localization.json'}")
    return 0 if report.get("reproduced") else 1
