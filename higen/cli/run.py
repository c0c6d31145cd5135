"""``higen [run] [flags]``: a fuzzing campaign (random, NNSmith's default or the hierarchical RL),
new or resumed, from its flags to its ``end`` line; the flags are checked before anything starts."""

from __future__ import annotations

import argparse
import importlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from higen.cli.coverage import add_coverage_flags, coverage_settings_from_args
from higen.cli.parsing import OneLineParser
from higen.errors import UserError
from higen.generation.config import INPUT_STRATEGIES, GenConfig
from higen.generation.decoder import DIMENSIONS, LEARNED, free_names
from higen.numerics.inputs import with_inputs
from higen.oracle import DEFAULT_TOLERANCES, NAN_POLICIES, Tolerance
from higen.workers import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_RECYCLE_AFTER

if TYPE_CHECKING:
    from higen.campaign_state import Budget

INPUTS_HELP = ("gradient: NNSmith's search keeps every op in its stable domain (default); random: no search; "
               "edge: boundary values per dtype (+-0, denormals, min/max normal, +-Inf, NaN, domain edges) "
               "mixed with random ones; maximize: gradient, then a few evaluations per test searching inputs that maximize "
               "the optimized vs unoptimized error (normal mode, see higen maximize)")


def add_inputs_argument(parser: argparse.ArgumentParser) -> None:
    """``--inputs gradient|random|edge`` for ``higen`` (run); read it back with :func:`with_inputs`."""
    parser.add_argument("--inputs", choices=INPUT_STRATEGIES, default="gradient", help=INPUTS_HELP)


def run_parser() -> OneLineParser:
    p = OneLineParser(prog="higen", description="Fuzz DL compilers with NNSmith models.")
    p.add_argument("--strategy", choices=("rl", "random", "nnsmith-default"), default="rl",
                   help="rl: PPO picks the free dimensions each big epoch, SAC their values each test (default); "
                        "random: the same decoder under a uniform-random policy (the baseline); "
                        "nnsmith-default: NNSmith's default configuration, only the seed changes")
    mode = p.add_argument_group("targets")
    mode.add_argument("--compiler", default="ort", metavar="{ort,tvm,ov}[@VERSION]",
                      help="normal mode: this compiler's optimized vs unoptimized build and the PyTorch reference; "
                           "@VERSION: a release from `higen runtimes add`, e.g. ort@1.20.1")
    mode.add_argument("--diff-backends", help="diff mode: comma-separated backends compared with each other, e.g. "
                                              "ort,ov,tvm; ort@1.20.1,ort compares two releases (see higen runtimes)")
    mode.add_argument("--diff-device", choices=("cpu", "gpu"), default="cpu")
    mode.add_argument("--diff-rtol", type=float, help="float32 relative tolerance (default %g)" % DEFAULT_TOLERANCES["float32"].rtol)
    mode.add_argument("--diff-atol", type=float, help="float32 absolute tolerance (default %g)" % DEFAULT_TOLERANCES["float32"].atol)
    mode.add_argument("--nan-policy", choices=NAN_POLICIES, default="skip-unstable",
                      help="skip-unstable: outputs whose reference holds NaN/Inf are not compared; strict: all are")
    budget = p.add_argument_group("budget (totals for the run, also when resumed; the first one spent ends it)")
    budget.add_argument("--max-tests", type=int, help="total tests")
    budget.add_argument("--big-epochs", type=int,
                        help=f"big epochs of --small-epochs tests (default: enough for --max-tests; with only "
                             f"--max-seconds, no limit; else {DEFAULT_BIG_EPOCHS})")
    budget.add_argument("--small-epochs", type=int, default=20, help="tests per big epoch")
    budget.add_argument("--max-seconds", type=float,
                        help="campaign time (start-up excluded); given alone, the run lasts this long")
    budget.add_argument("--seed", type=int, default=0)
    budget.add_argument("--max-nodes", type=int, default=10, help="typical graph size")
    rl = p.add_argument_group("rl")
    rl.add_argument("--resume", type=Path, metavar="RUN_DIR",
                    help="continue a run (rl or random) from its newest checkpoint and its log (its own "
                         "settings; budgets may grow)")
    rl.add_argument("--reward-config", type=Path, metavar="TOML", help="reward weights: tables [low] and [high]")
    rl.add_argument("--reward", action="append", default=[], metavar="LEVEL.KEY=VALUE",
                    help="one reward weight, e.g. low.new_bug=20 (after --reward-config; see docs/rewards.md)")
    rl.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the policies train")
    rl.add_argument("--net-arch", default="64,64", help="hidden layer sizes of both policies, e.g. 64,64")
    rl.add_argument("--ppo-steps", type=int, default=4, help="big epochs per PPO update (>= 2)")
    rl.add_argument("--learning-starts", type=int, default=10, help="uniform-random tests before SAC learns")
    rl.add_argument("--sac-train-every", type=int, default=4, metavar="K", help="tests per SAC gradient step")
    rl.add_argument("--sac-learns", default=",".join(LEARNED), metavar="DIMS",
                    help=f"dimensions SAC sets, comma-separated, or all (the others are drawn uniformly, as the "
                         f"random baseline draws them; choose from {','.join(DIMENSIONS)})")
    rl.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                    help="big epochs between RL checkpoints (also one at the start, the end and on Ctrl-C)")
    out = p.add_argument_group("output")
    out.add_argument("--run-root", type=Path, default=Path("runs"))
    out.add_argument("--no-session-subdir", action="store_true", help="write into --run-root itself")
    out.add_argument("--examples-per-signature", type=int, default=1,
                     help="bug cases kept per credible root cause (noise: one)")
    findings = p.add_argument_group("root causes (see docs/bug-cases.md)")
    findings.add_argument("--root-causes", choices=("auto", "off"), default="auto",
                          help="auto: localize every finding to its first diverging node and judge it "
                               "(bugs vs noise); off: count signatures only")
    findings.add_argument("--reduce", choices=("auto", "off"), default="auto",
                          help="auto: reduce the first case of every new bug in the background")
    findings.add_argument("--reduce-budget", type=float, default=120.0, metavar="S",
                          help="seconds one background reduction may search")
    out.add_argument("--no-progress", action="store_true")
    numerics = p.add_argument_group("numerics (see docs/numerics.md)")
    add_inputs_argument(numerics)
    numerics.add_argument("--record-numerics", action="store_true",
                          help="per-op NaN/Inf/overflow/underflow counts to numerics.jsonl for `higen numerics` "
                               "(runs each test once more with intermediates exposed)")
    add_coverage_flags(p)
    scale = p.add_argument_group("scaling (see docs/scaling.md)")
    scale.add_argument("--workers", type=int,
                       help="pipelines (a generator and a set of backend workers each) running tests at once "
                            "(default: cores - 1, at least 1; with --ray-address: at most this many, "
                            "default one per CPU slot of the cluster)")
    scale.add_argument("--ray-address", metavar="auto|HOST:PORT",
                       help="run the pipelines as Ray actors on this cluster; the learner and the bug store stay "
                            "here (needs pip install -e \".[ray]\")")
    limits = p.add_argument_group("limits")
    limits.add_argument("--timeout", type=float, default=60.0, help="seconds per test and target")
    limits.add_argument("--tvm-timeout", type=float, help="seconds per test for TVM targets (default --timeout)")
    limits.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_LIMIT_MB, help="worker memory cap")
    limits.add_argument("--recycle-after", type=int, default=DEFAULT_RECYCLE_AFTER, metavar="N",
                        help="restart each backend worker after N tests, bounding slow leaks (0: never)")
    limits.add_argument("--no-support-probe", action="store_true",
                        help="skip learning each target's op/dtype support (more unsupported tests)")
    return p


DEFAULT_BIG_EPOCHS = 5
#: ``--big-epochs`` when only ``--max-seconds`` is given: the time decides (the RL plans epochs until then)
UNLIMITED_BIG_EPOCHS = 10**9
#: Flags a resumed run takes from its checkpoint; giving another value is an error.
RESUME_LOCKED = ("strategy", "inputs", "compiler", "diff_backends", "diff_device", "diff_rtol", "diff_atol", "nan_policy",
                 "small_epochs", "seed", "max_nodes", "reward_config", "reward", "net_arch", "ppo_steps",
                 "learning_starts", "sac_train_every", "sac_learns", "checkpoint_every", "run_root",
                 "no_session_subdir")


def resumed_args(args: argparse.Namespace, argv: list[str]):
    """For ``--resume RUN_DIR``: the run's recorded command line with this one's flags on top, its
    newest checkpoint folder and state. Settings that shape the run may not change."""
    from higen.agents.checkpoint import latest_checkpoint, read_run_state

    if not args.resume.is_dir():
        raise UserError(f"--resume {args.resume}: no such run folder")
    folder = latest_checkpoint(args.resume)
    data = read_run_state(folder)
    merged = run_parser().parse_args(data["context"]["argv"])
    unset = object()  # this command line's own flags only: argparse fills no default over a set attribute
    given = argparse.Namespace(**{name: [] if isinstance(value, list) else unset for name, value in vars(merged).items()})
    run_parser().parse_args(argv, namespace=given)
    for name, value in vars(given).items():
        if value is unset or value == [] or name == "resume":
            continue
        if name in RESUME_LOCKED and value != getattr(merged, name):
            raise UserError(f"--resume keeps the run's own --{name.replace('_', '-')} "
                            f"({getattr(merged, name)}); start a new run to change it")
        setattr(merged, name, value)
    merged.resume = args.resume
    return merged, folder, data


def parse_net_arch(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) <= 0:
        raise UserError(f"--net-arch {text!r}: write positive layer sizes separated by commas, e.g. 64,64")
    return sizes


def parse_learned(text: str) -> tuple[str, ...]:
    """``--sac-learns``: dimension names separated by commas, or ``all``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return DIMENSIONS
    try:
        learned = free_names(names)
    except ValueError as error:
        raise UserError(f"--sac-learns {text!r}: {error}") from None
    if not learned:
        raise UserError(f"--sac-learns {text!r}: name at least one of {','.join(DIMENSIONS)}, or all")
    return learned


def check_run_args(args: argparse.Namespace) -> None:
    """Refuse impossible values in one line; fill the big epochs when not given: enough for --max-tests,
    no limit when only --max-seconds is given, else the default."""
    if args.big_epochs is None:
        if args.max_tests and args.max_tests > 0 and args.small_epochs > 0:
            args.big_epochs = -(-args.max_tests // args.small_epochs)
        else:
            args.big_epochs = UNLIMITED_BIG_EPOCHS if args.max_seconds else DEFAULT_BIG_EPOCHS
    for flag in ("max_tests", "big_epochs", "small_epochs", "max_nodes", "timeout", "tvm_timeout", "max_seconds",
                 "workers", "sac_train_every", "checkpoint_every"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, not {value}")
    if args.diff_device != "cpu" and not args.diff_backends:
        raise UserError("--diff-device applies to diff mode: add --diff-backends, e.g. --diff-backends ort,ov")
    for flag in ("learning_starts", "recycle_after"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be 0 or more, not {getattr(args, flag)}")
    if args.ppo_steps < 2:
        raise UserError(f"--ppo-steps must be at least 2, not {args.ppo_steps}")
    parse_net_arch(args.net_arch)
    parse_learned(args.sac_learns)
    if args.device == "cuda":  # SB3 would fall back to the CPU silently
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: PyTorch sees no CUDA device here; use --device cpu")


def test_cap(args: argparse.Namespace) -> int | None:
    """Tests the run may do: the smaller of --max-tests and big epochs x small epochs (None: no cap,
    only --max-seconds)."""
    caps = [args.max_tests, None if args.big_epochs >= UNLIMITED_BIG_EPOCHS else args.big_epochs * args.small_epochs]
    return min((cap for cap in caps if cap), default=None)


def describe_budget(args: argparse.Namespace, total: int | None) -> str:
    parts = ([f"{total} tests"] if total else []) + ([f"{args.max_seconds:g} s"] if args.max_seconds else [])
    return " or ".join(parts)


def make_trainer(args, engine, run_dir: Path, rewards, base: GenConfig, log, context: dict, saved: dict | None):
    """The hierarchical trainer for this run: new settings from the flags, or a checkpoint's own."""
    from higen.agents.trainer import AgentSettings, HierarchicalTrainer

    agent = (AgentSettings.from_json(saved["settings"]) if saved else
             AgentSettings(seed=args.seed, small_epochs=args.small_epochs, net_arch=parse_net_arch(args.net_arch),
                           device=args.device, ppo_n_steps=args.ppo_steps, sac_learning_starts=args.learning_starts,
                           sac_train_every=args.sac_train_every, sac_learned=parse_learned(args.sac_learns),
                           checkpoint_every=args.checkpoint_every))
    return HierarchicalTrainer(engine, run_dir, agent, rewards, run_budget(args), base, log, context)


def run_budget(args: argparse.Namespace) -> Budget:
    """The run's budget (totals, resumed sessions included), the same for every strategy."""
    from higen.campaign_state import Budget

    return Budget(args.big_epochs, args.max_tests, args.max_seconds)


def command_run(argv: list[str]) -> int:
    from higen.campaign import (
        campaign_checkpointer,
        make_progress,
        resume_campaign,
        run_campaign,
        run_rl_campaign,
    )
    from higen.campaign_state import CampaignState
    from higen.engine import EngineSettings
    from higen.modes import diff_plan, normal_plan
    from higen.rewards import RewardConfig, load_reward_config
    from higen.run_dir import RunLog, create_run_dir, read_history
    from higen.scale import make_engine, resolve_workers
    from higen.strategies import STRATEGIES

    args = run_parser().parse_args(argv)
    checkpoint, saved = None, None
    if args.resume is not None:
        args, checkpoint, saved = resumed_args(args, argv)
    check_run_args(args)
    rewards = (RewardConfig.from_json(saved["rewards"]) if saved and "rewards" in saved
               else load_reward_config(args.reward_config, args.reward))
    base = with_inputs(GenConfig(max_nodes=args.max_nodes), args.inputs)
    try:
        plan = (diff_plan(args.diff_backends.split(","), args.diff_device) if args.diff_backends
                else normal_plan(args.compiler, with_gpu=True if args.ray_address else None))  # GPUs: per node
    except ValueError as error:
        raise UserError(str(error)) from error
    tolerances = {}
    if args.diff_rtol is not None or args.diff_atol is not None:
        default = DEFAULT_TOLERANCES["float32"]
        tolerances["float32"] = Tolerance(args.diff_rtol if args.diff_rtol is not None else default.rtol,
                                          args.diff_atol if args.diff_atol is not None else default.atol)
    total = test_cap(args)
    settings = EngineSettings(plan=plan, timeout_s=args.timeout, memory_limit_mb=args.memory_limit_mb,
                              recycle_after=args.recycle_after,
                              timeouts_by_target={t.name: args.tvm_timeout for t in plan.targets
                                                  if args.tvm_timeout is not None and t.runtime == "tvm"},
                              tolerances=tolerances, nan_policy=args.nan_policy,
                              examples_per_signature=args.examples_per_signature,
                              root_causes=args.root_causes == "auto", reduce=args.reduce,
                              reduce_budget_s=args.reduce_budget,
                              learn_support=not args.no_support_probe,
                              coverage=coverage_settings_from_args(args), numerics=args.record_numerics)
    workers = resolve_workers(settings, args.workers, args.ray_address)
    if args.ray_address is not None:  # before anything is written: a bad address ends in one line
        from higen.scale.cluster import connect

        connect(args.ray_address)
    run_dir = args.resume or create_run_dir(args.run_root, not args.no_session_subdir)
    history = read_history(run_dir / "training.log") if checkpoint else None  # before anything is appended
    console = Console(stderr=True)
    console.print(f"HiGen {args.strategy} run in [bold]{run_dir}[/bold]{' (resumed)' if checkpoint else ''}: "
                  f"{plan.mode} mode on {', '.join(t.name for t in plan.targets)}, {describe_budget(args, total)}, "
                  f"seed {args.seed}")
    log = RunLog(run_dir / "training.log")
    if args.strategy == "rl":  # import torch and SB3 (seconds) while the workers start
        threading.Thread(target=importlib.import_module, args=("higen.agents.trainer",), daemon=True).start()
    engine = make_engine(settings, run_dir, console, workers, args.ray_address)
    if history is not None:  # indices, counters and the coverage union continue after the last logged test
        engine.restore_counters(history)
        engine.coverage.resume(history.last_index)
    context = {"argv": saved["context"]["argv"] if saved else argv}
    with engine, make_progress(console, not args.no_progress) as progress:
        probe = progress.add_task("learning op support", total=None, stats="")
        versions = engine.start(lambda done, n: progress.update(probe, completed=done, total=n))
        progress.update(probe, visible=False)
        log.write("resume" if checkpoint else "start", argv=argv, seed=args.seed, strategy=args.strategy,
                  plan=[t.name for t in plan.targets], versions=versions,
                  **({"checkpoint": str(checkpoint), "continues_after": history.last_index} if checkpoint else {}))
        if args.strategy in STRATEGIES:
            strategy = STRATEGIES[args.strategy](args.seed, engine.ops(), base, args.small_epochs)
            state = CampaignState(engine, rewards, args.small_epochs, run_budget(args))
            if saved:  # the checkpoint's state, then past the tests logged after it
                resume_campaign(state, strategy, saved, history)
            summary = run_campaign(state, strategy, total, log, progress, history,
                                   campaign_checkpointer(run_dir, context, state))
        else:
            trainer = make_trainer(args, engine, run_dir, rewards, base, log, context, saved)
            if checkpoint:
                trainer.resume(checkpoint, saved, history)
            summary = run_rl_campaign(trainer, total, log, progress)
    log.write("end", tests=summary.tests, wall_s=summary.wall_s, verdicts=dict(summary.verdicts),
              bugs=summary.bugs, noise_causes=summary.noise_causes,
              unique_signatures=summary.unique_signatures, unique_tokens=summary.unique_tokens,
              generator_timeouts=summary.generator_timeouts, interrupted=summary.interrupted)
    log.close()
    console.print(f"{summary.tests} tests in {summary.wall_s:.1f} s ({summary.tests_per_s:.1f}/s), "
                  f"{summary.bugs} bugs ({summary.noise_causes} root causes of noise; {summary.unique_signatures} "
                  f"signatures), {len(summary.cases)} bug cases in {run_dir / 'bug_cases'}")
    return 130 if summary.interrupted else 0
