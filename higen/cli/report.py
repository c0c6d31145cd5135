"""``higen report CASE``: write a case's Markdown bug report (:func:`higen.bugs.report.build_report`)
and, on request, its standalone repro script."""

from __future__ import annotations

import sys
from pathlib import Path

from higen.bugs.known_issues import load_known
from higen.bugs.report import build_report
from higen.cli.parsing import OneLineParser


def command_report(argv: list[str]) -> int:
    parser = OneLineParser(prog="higen report", description="Write a Markdown bug report for a case, as the "
                                                            "runtime's tracker expects it.")
    parser.add_argument("case", type=Path, help="a bug case folder (bug_cases/<case>)")
    parser.add_argument("--out", type=Path, help="write the report here (default: print it)")
    parser.add_argument("--script", type=Path, help="also write the standalone repro script here")
    parser.add_argument("--known", type=Path, help="known upstream issues (TOML; default: HiGen's list)")
    parser.add_argument("--no-run", action="store_true", help="do not run the repro script")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the repro script may run")
    args = parser.parse_args(argv)
    known = load_known(args.known) if args.known else None
    report = build_report(args.case, not args.no_run, args.timeout, known)
    if args.script:
        args.script.write_text(report.script)
    if args.out:
        args.out.write_text(report.markdown)
        shown = {0: "the bug shows", 1: "the bug does not show", None: "not run or no result"}.get(
            report.exit_status, f"exit {report.exit_status}")
        print(f"written: {args.out} (repro script: {shown}; {len(report.matches)} similar known issue(s))")
    else:
        sys.stdout.write(report.markdown)
    return 0
