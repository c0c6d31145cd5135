"""``higen maximize MODEL.onnx|DIR --targets ort``: inputs that maximize the error between a
compiler's optimized and unoptimized builds, traced and localized (:mod:`higen.numerics.maximize`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from higen.backends.registry import require_installed
from higen.cli.parsing import OneLineParser
from higen.errors import UserError
from higen.numerics.maximize import ModelResult, Settings, collect_models, maximize_all, parse_ranges
from higen.numerics.maxpair import RUNTIMES
from higen.numerics.maxreport import fmt
from higen.numerics.maxsearch import SEARCHES
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def maximize_parser() -> OneLineParser:
    p = OneLineParser(prog="higen maximize", description="Search inputs that maximize the error between a "
                      "compiler's optimized and unoptimized builds, trace it through the graph, localize it.")
    p.add_argument("path", type=Path, help="an .onnx file, a bug case folder, or a folder of them")
    p.add_argument("--targets", default="ort", help=f"runtimes, comma-separated: {', '.join(RUNTIMES)} (default ort)")
    p.add_argument("--low", type=float, default=0.0, help="lowest input value (default 0)")
    p.add_argument("--high", type=float, default=1.0, help="highest input value (default 1)")
    p.add_argument("--per-input", metavar="NAME=LO:HI,...", help="ranges of single inputs")
    p.add_argument("--budget", type=float, default=120.0,
                   help="seconds for all searches and traces together (default 120); localization comes after")
    p.add_argument("--evals", type=int, default=200, help="evaluations per model and runtime (default 200)")
    p.add_argument("--search", choices=SEARCHES, default="de", help="de (default), random or mcmc")
    p.add_argument("--batch", type=int, default=8, help="candidates per request of random search and MCMC")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("maximize"), help="output folder (default ./maximize)")
    p.add_argument("--localize-top", type=int, default=1, help="run higen localize on the N worst models (default 1)")
    p.add_argument("--localize-budget", type=float, default=60.0, help="pass-search seconds per target (default 60)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per compile and per request")
    p.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_LIMIT_MB)
    return p


def settings_from_args(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    """The search settings and runtimes the flags ask for; a value out of range is a UserError."""
    runtimes = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in runtimes if t not in RUNTIMES]
    if unknown or not runtimes:
        raise UserError(f"--targets {args.targets}: choose from {', '.join(RUNTIMES)}")
    for runtime in runtimes:
        require_installed(runtime)
    if not args.low <= args.high:
        raise UserError(f"--low {args.low:g} exceeds --high {args.high:g}")
    for flag in ("budget", "evals", "batch", "timeout"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag} must be positive, not {getattr(args, flag)}")
    return Settings(args.low, args.high, parse_ranges(args.per_input), args.search, args.evals, args.batch, args.seed,
                    args.timeout, args.memory_limit_mb, args.localize_top, args.localize_budget), runtimes


def command_maximize(argv: list[str]) -> int:
    args = maximize_parser().parse_args(argv)
    settings, runtimes = settings_from_args(args)
    models = collect_models(args.path)
    console = Console(stderr=True)
    console.print(f"higen maximize: {len(models)} model(s) on {', '.join(runtimes)}, search {settings.search}, "
                  f"{settings.evals} evaluations each, budget {args.budget:g} s -> {args.out}")

    def progress(result: ModelResult, done: int, total: int) -> None:
        what = fmt(result.error) if result.status == "ok" else f"skipped: {result.reason[:120]}"
        console.print(f"[{done}/{total}] {result.name} ({result.runtime}): {what}")

    args.out.mkdir(parents=True, exist_ok=True)
    results = maximize_all(models, runtimes, settings, args.out, args.budget, progress)
    best = max(results, key=lambda r: r.error)
    console.print(f"worst: {best.name} ({best.runtime}) error {fmt(best.error)}; summary: {args.out / 'summary.md'}")
    return 0 if any(r.status == "ok" for r in results) else 1
