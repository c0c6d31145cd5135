"""``higen triage RUN_OR_BUG_CASES_DIR``: rank the root causes of saved bug cases, most worth a look
first (the ranking is :mod:`higen.bugs.triage`), as a table, plain lines, JSON or Markdown."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from higen.bugs.triage import FAILURES, Ranked, describe, markdown, rank
from higen.cli.parsing import OneLineParser
from higen.errors import UserError


def table(ranked: list[Ranked]) -> Table:
    out = Table("#", "score", "root cause", "where", "sigs", "seen", "cases", "reduced", "tags", "example",
                title="root causes: bugs first (most worth a look first), then noise")
    for number, e in enumerate(ranked, 1):
        style = "dim" if e.noise else ("red" if e.verdict in FAILURES else "")
        out.add_row(str(number), f"{e.score:g}", describe(e), e.where, str(len(e.signatures)), str(e.count),
                    str(len(e.cases)), e.reduced, " ".join(e.tags), Path(e.cases[0]).name, style=style)
    return out


def plain(ranked: list[Ranked]) -> list[str]:
    """One line per root cause, for a console that is not a terminal (piped into a file or a pager)."""
    return [f"{number}. {'noise' if e.noise else 'bug'} {e.score:g} {describe(e)} | {e.where} | "
            f"{len(e.signatures)} signatures, seen {e.count}, {len(e.cases)} cases | {' '.join(e.tags) or '-'} | "
            f"{e.cases[0]}" for number, e in enumerate(ranked, 1)]


def command_triage(argv: list[str]) -> int:
    parser = OneLineParser(prog="higen triage", description="Rank the bug signatures of a run or bug_cases folder.")
    parser.add_argument("path", type=Path, help="a run root, a session (runs/N), a bug_cases folder or one case")
    parser.add_argument("--top", type=int, help="show only the N best signatures")
    parser.add_argument("--only-crashes", action="store_true", help="only crash, error and timeout signatures")
    parser.add_argument("--exclude-ops", default="", help="comma-separated op types: leave out cases holding them")
    parser.add_argument("--json", type=Path, help="write the ranking as JSON")
    parser.add_argument("--markdown", type=Path, help="write the ranking as a Markdown table")
    args = parser.parse_args(argv)
    if not args.path.is_dir():
        raise UserError(f"{args.path} is not a folder: pass a run root, runs/N, or a bug_cases folder")
    if args.top is not None and args.top <= 0:
        raise UserError(f"--top must be positive, not {args.top}")
    console, errors = Console(), Console(stderr=True)
    ranked, skipped = rank(args.path, args.only_crashes, {op for op in args.exclude_ops.split(",") if op},
                           warn=lambda line: errors.print(f"[yellow]warning:[/yellow] {line}", soft_wrap=True,
                                                          highlight=False))
    shown = ranked[:args.top] if args.top else ranked
    if shown and console.is_terminal:
        console.print(table(shown))
    elif shown:
        for line in plain(shown):
            console.print(line, soft_wrap=True, highlight=False, markup=False)
    bugs = sum(not e.noise for e in ranked)
    console.print(f"{bugs} bugs ({len(ranked) - bugs} root causes of noise) from "
                  f"{sum(len(e.signatures) for e in ranked)} signatures and {sum(len(e.cases) for e in ranked)} "
                  f"case examples{f', {len(skipped)} folders skipped' if skipped else ''}")
    if args.json:
        args.json.write_text(json.dumps({"source": str(args.path), "root_causes": [asdict(e) for e in shown],
                                         "skipped": skipped}, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(shown, args.path))
    return 0
