"""``higen reduce CASE``: shrink a bug case's model, keeping its signature
(:func:`higen.bugs.reduce.reduce_case`). Exit status: 0 reduced (or already minimal) with the same
signature, 1 the case does not reproduce here."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console

from higen.bugs.case import load_case
from higen.bugs.reduce import reduce_case
from higen.bugs.rootcause import graph_form
from higen.cli.parsing import OneLineParser
from higen.errors import UserError
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def command_reduce(argv: list[str]) -> int:
    parser = OneLineParser(prog="higen reduce", description="Shrink a bug case's model, keeping its signature.")
    parser.add_argument("case", type=Path, help="a bug case folder (bug_cases/<case>)")
    parser.add_argument("--signature", help="which of the case's findings to keep (default: the case's own)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per candidate and target")
    parser.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_LIMIT_MB)
    parser.add_argument("--max-candidates", type=int, default=500, help="candidate models tried at most")
    parser.add_argument("--budget", type=float, default=math.inf, help="seconds the search may take (best so far is kept)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    case = load_case(args.case)
    if args.signature and args.signature not in {f["signature"] for f in case.meta["findings"]}:
        raise UserError(f"{args.case} has no finding with signature {args.signature!r} (see its meta.json)")
    console = Console()
    result, folder = reduce_case(case, args.signature, args.timeout, args.memory_limit_mb, args.max_candidates,
                                 args.budget)
    signature = args.signature or case.signature
    summary = {"case": str(case.path), "signature": signature, "reproduced": result.reproduced,
               "nodes_before": result.nodes_before, "nodes_after": result.nodes_after,
               "form": graph_form(result.best.model) if folder else "",
               "candidates": result.tried, "seconds": round(result.seconds, 2), "reduced": str(folder or "")}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if folder is None:
        console.print(f"[yellow]{case.path}: the signature does not reproduce here with the installed "
                      f"runtimes; nothing written[/yellow]\n  {signature}", soft_wrap=True)
        return 1
    ops = ", ".join(node.op_type for node in result.best.model.graph.node)
    console.print(f"{case.path}: {result.nodes_before} -> {result.nodes_after} nodes ({ops}), same signature, "
                  f"{result.tried} candidates in {result.seconds:.1f} s\n  {signature}\n  written to {folder}",
                  soft_wrap=True)
    return 0
