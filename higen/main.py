"""Command line: ``python -m higen.main [run flags]`` and ``higen SUBCOMMAND`` (see SUBCOMMANDS).

This module only parses flags and wires the parts together; every error a user can cause ends in
one line that says what to do.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from rich.console import Console

from higen.generation.config import GenConfig
from higen.oracle import DEFAULT_TOLERANCES, NAN_POLICIES, Tolerance

#: ``higen NAME ...`` -> the module and function that handle it (each parses its own flags).
SUBCOMMANDS = {
    "exec": ("higen.exec_model", "command_exec"),
    "doctor": ("higen.doctor", "command_doctor"),
    "triage": ("higen.bugs.triage", "command_triage"),
    "repro": ("higen.bugs.repro", "command_repro"),
    "reduce": ("higen.bugs.reduce", "command_reduce"),
    "plot": ("higen.coverage.plot", "command_plot"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of a usage dump."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit status 2."""


def run_parser() -> OneLineParser:
    p = OneLineParser(prog="higen", description="Fuzz DL compilers with NNSmith models.")
    p.add_argument("--strategy", choices=("random",), default="random",
                   help="how configs are chosen: random (uniform baseline)")
    mode = p.add_argument_group("targets")
    mode.add_argument("--compiler", choices=("ort", "tvm", "ov"), default="ort",
                      help="normal mode: this compiler's optimized vs unoptimized build and the PyTorch reference")
    mode.add_argument("--diff-backends", help="diff mode: comma-separated backends compared with each other, e.g. ort,ov,tvm")
    mode.add_argument("--diff-device", choices=("cpu", "gpu"), default="cpu")
    mode.add_argument("--diff-rtol", type=float, help="float32 relative tolerance (default %g)" % DEFAULT_TOLERANCES["float32"].rtol)
    mode.add_argument("--diff-atol", type=float, help="float32 absolute tolerance (default %g)" % DEFAULT_TOLERANCES["float32"].atol)
    mode.add_argument("--nan-policy", choices=NAN_POLICIES, default="skip-unstable",
                      help="skip-unstable: outputs whose reference holds NaN/Inf are not compared; strict: all are")
    budget = p.add_argument_group("budget")
    budget.add_argument("--max-tests", type=int, help="total tests (default big-epochs x small-epochs)")
    budget.add_argument("--big-epochs", type=int, default=5)
    budget.add_argument("--small-epochs", type=int, default=20, help="tests per big epoch")
    budget.add_argument("--seed", type=int, default=0)
    budget.add_argument("--max-nodes", type=int, default=10, help="typical graph size")
    out = p.add_argument_group("output")
    out.add_argument("--run-root", type=Path, default=Path("runs"))
    out.add_argument("--no-session-subdir", action="store_true", help="write into --run-root itself")
    out.add_argument("--examples-per-signature", type=int, default=1, help="bug cases kept per signature")
    out.add_argument("--no-progress", action="store_true")
    limits = p.add_argument_group("limits")
    limits.add_argument("--timeout", type=float, default=60.0, help="seconds per test and target")
    limits.add_argument("--memory-limit-mb", type=int, default=8192, help="worker memory cap")
    limits.add_argument("--no-support-probe", action="store_true",
                        help="skip learning each target's op/dtype support (more unsupported tests)")
    return p


def command_run(argv: list[str]) -> int:
    from higen.campaign import make_progress, run_campaign
    from higen.engine import Engine, EngineSettings
    from higen.modes import diff_plan, normal_plan
    from higen.run_dir import RunLog, create_run_dir
    from higen.strategies import RandomStrategy

    args = run_parser().parse_args(argv)
    for flag in ("max_tests", "big_epochs", "small_epochs", "max_nodes", "timeout"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, not {value}")
    if args.diff_device != "cpu" and not args.diff_backends:
        raise UserError("--diff-device applies to diff mode: add --diff-backends, e.g. --diff-backends ort,ov")
    base = GenConfig(max_nodes=args.max_nodes)
    try:
        plan = (diff_plan(args.diff_backends.split(","), args.diff_device) if args.diff_backends
                else normal_plan(args.compiler))
    except ValueError as error:
        raise UserError(str(error)) from error
    tolerances = {}
    if args.diff_rtol is not None or args.diff_atol is not None:
        default = DEFAULT_TOLERANCES["float32"]
        tolerances["float32"] = Tolerance(args.diff_rtol if args.diff_rtol is not None else default.rtol,
                                          args.diff_atol if args.diff_atol is not None else default.atol)
    total = args.max_tests or args.big_epochs * args.small_epochs
    run_dir = create_run_dir(args.run_root, not args.no_session_subdir)
    console = Console(stderr=True)
    console.print(f"HiGen run in [bold]{run_dir}[/bold]: {plan.mode} mode on "
                  f"{', '.join(t.name for t in plan.targets)}, {total} tests, seed {args.seed}")
    settings = EngineSettings(plan=plan, timeout_s=args.timeout, memory_limit_mb=args.memory_limit_mb,
                              tolerances=tolerances, nan_policy=args.nan_policy,
                              examples_per_signature=args.examples_per_signature,
                              learn_support=not args.no_support_probe)
    log = RunLog(run_dir / "training.log")
    with Engine(settings, run_dir, console) as engine, make_progress(console, not args.no_progress) as progress:
        probe = progress.add_task("learning op support", total=None, stats="")
        versions = engine.start(lambda done, n: progress.update(probe, completed=done, total=n))
        progress.update(probe, visible=False)
        log.write("start", argv=argv, seed=args.seed, plan=[t.name for t in plan.targets], versions=versions)
        strategy = RandomStrategy(args.seed, list(engine.generator.info["ops"]), base)
        summary = run_campaign(engine, strategy, total, args.small_epochs, log, progress)
    log.write("end", tests=summary.tests, wall_s=summary.wall_s, verdicts=dict(summary.verdicts),
              unique_signatures=summary.unique_signatures, interrupted=summary.interrupted)
    log.close()
    console.print(f"{summary.tests} tests in {summary.wall_s:.1f} s ({summary.tests_per_s:.1f}/s), "
                  f"{summary.unique_signatures} unique findings, {len(summary.cases)} bug cases in {run_dir / 'bug_cases'}")
    return 130 if summary.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    from higen.backends.base import BackendMissing, DeviceUnavailable
    from higen.generation.config import ConfigError
    from higen.workers import WorkerStartError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        argv.pop(0)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            module, function = SUBCOMMANDS[argv.pop(0)]
            return getattr(importlib.import_module(module), function)(argv)
        return command_run(argv)
    except (UserError, BackendMissing, DeviceUnavailable, ConfigError, WorkerStartError) as error:
        print(f"higen: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run the importable module, not this __main__ copy: other modules raise higen.main.UserError.
    from higen.main import main as _main

    sys.exit(_main())
