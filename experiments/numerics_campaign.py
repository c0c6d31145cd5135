"""A numerics campaign: edge-value inputs in diff mode, per-operator events recorded for every test,
then the instability report.

    python experiments/numerics_campaign.py --minutes 20 --out docs/numerics-example

Tests come from the uniform-random baseline strategy with ``inputs=edge`` and vulnerable operators
(Log, Asin, Pow, ...) allowed by default. Each test runs on every diff target (default ORT O3,
OpenVINO CPU, TVM O3) and is judged as a campaign judges it (bug cases are saved); then it runs once
more with its intermediates exposed, and :class:`higen.numerics.stats.NumericsRecorder` appends its
per-operator counts to ``numerics.jsonl``. When the wall-clock budget is spent, the report
(``numerics.md``, CSVs, ``by_operator.png``, ``heatmap.png``) is written to ``--out``. Op-support
learning runs before the clock starts (it is cached per runtime version).

The engine hook is wired here by subclassing the engine; ``higen`` itself wires it in ``Engine``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from rich.console import Console

from higen.engine import Engine, EngineSettings
from higen.generation.config import GenConfig
from higen.modes import diff_plan
from higen.numerics.report import write_report
from higen.numerics.summary import build_summary
from higen.campaign import make_progress, run_campaign
from higen.campaign_state import Budget, CampaignState
from higen.rewards import RewardConfig
from higen.run_dir import RunLog, create_run_dir
from higen.strategies import RandomStrategy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of the campaign")
    parser.add_argument("--backends", default="ort,ov,tvm")
    parser.add_argument("--run-root", type=Path, default=Path("runs/numerics"))
    parser.add_argument("--out", type=Path, default=Path("docs/numerics-example"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-nodes", type=int, default=10)
    parser.add_argument("--no-vulnerable", action="store_true", help="keep Log/Asin/Pow... out by default")
    args = parser.parse_args()

    console = Console(stderr=True)
    plan = diff_plan(args.backends.split(","), "cpu")
    run_dir = create_run_dir(args.run_root)
    base = GenConfig(max_nodes=args.max_nodes, inputs="edge", vulnerable_ops=not args.no_vulnerable)
    log = RunLog(run_dir / "training.log")
    settings = EngineSettings(plan=plan, numerics=True)  # per-op events of every test to numerics.jsonl
    with Engine(settings, run_dir, console) as engine, make_progress(console) as progress:
        versions = engine.start()
        log.write("start", argv=vars(args), seed=args.seed, plan=[t.name for t in plan.targets], versions=versions)
        strategy = RandomStrategy(args.seed, engine.ops(), base)
        console.print(f"numerics campaign in {run_dir}: {', '.join(t.name for t in plan.targets)}, "
                      f"{args.minutes:g} min, edge inputs")
        state = CampaignState(engine, RewardConfig(), 20, Budget(10**9, max_seconds=60 * args.minutes))
        result = run_campaign(state, strategy, None, log, progress)
    log.write("end", tests=result.tests, wall_s=result.wall_s, verdicts=dict(result.verdicts),
              unique_signatures=result.unique_signatures)
    log.close()
    wall, verdicts = result.wall_s, dict(result.verdicts)
    timings: Counter = Counter()
    for line in (run_dir / "training.log").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "test":
            timings.update(event["timings"])
    summary = build_summary(run_dir)
    tests = result.tests
    context = {
        "Campaign": f"{tests} tests in {wall / 60:.1f} min ({tests / wall:.2f}/s), edge inputs, diff mode on "
                    f"{', '.join(t.name for t in plan.targets)}, seed {args.seed}, max nodes {args.max_nodes}",
        "Verdicts": ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())),
        "Unique findings": f"{result.unique_signatures} signatures, bug cases in `{run_dir / 'bug_cases'}`",
        "Time per test": f"numerics re-run {timings['numerics_s'] / max(tests, 1):.2f} s, "
                         f"campaign execution {timings['exec_s'] / max(tests, 1):.2f} s",
    }
    written = write_report(summary, args.out, context)
    totals = summary.op_totals()
    console.print(f"{tests} tests, {wall:.0f} s, verdicts {verdicts}; {summary.tests} numerics records, "
                  f"{len(totals)} operators, {sum(summary.disagreements.values())} disagreeing nodes")
    for op, counts in list(totals.items())[:8]:
        console.print(f"  {op}: runs {counts['runs']} nan {counts['nan']} inf {counts['inf']} "
                      f"overflow {counts['overflow']} underflow {counts['underflow']} error {counts['error']}")
    console.print(f"report: {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
