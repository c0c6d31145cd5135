"""Campaigns of several strategies on the same budget and targets, over several seeds.

    python experiments/campaign.py --budget-min 30 --seeds 3 --strategies rl,random
    python experiments/campaign.py --budget-min 30 --seeds 3 --diff-backends ort,tvm,ov   # diff mode
    python experiments/campaign.py --budget-min 30 --seeds 3 --side-by-side   # rl and random at once, one core each
    python experiments/campaign.py --budget-min 30 --seeds 3 --from-runs runs/campaign-X   # summarize again
    python experiments/campaign.py --budget-min 2 --seeds 1 -- --max-nodes 8   # flags after -- go to every run

Each (seed, strategy) is one ``python -m higen.main`` campaign (``rl_vs_random.campaign``: one after
the other, strategies interleaved per seed, ``--max-seconds`` with start-up and op-support learning
excluded; with ``--side-by-side`` the strategies of a seed run at the same time, each pinned to its
own share of the cores: half the wall time on 2 cores, the same machine for each strategy), on ONNX
Runtime in normal mode unless ``--diff-backends`` is given, with ``--coverage auto`` (ORT: graph
transformers; TVM: Python arcs; OpenVINO: layers) unless ``--coverage`` says otherwise.

Per run: bugs (credible root causes: the headline) by kind from the run's ``root_causes.json``,
root causes of noise, unique signatures (symptoms, shown for comparison with older results), validity (tests neither invalid nor unsupported), tests/s, and coverage at the end (last
measured value of each ``*_covered`` column of ``coverage_by_steps.csv``: structure tokens, ORT
transformers, TVM Python arcs; empty when the collector was not enabled). Per strategy: mean,
standard deviation, min and max over the seeds. ``--from-runs`` computes all of it again from the
run folders of an earlier campaign, without running anything.

Writes under --out-dir: campaign.csv (one row per run), campaign_summary.csv (per strategy and
metric), campaign.png (metrics with their spread, and mean curves over time with a min-max band),
campaign_curves.png (``higen plot`` of every run). The run folders stay in --runs.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from common import RESULTS, console, higen, machine_note, print_table, pyplot, save_figure, spread, write_csv
from higen.coverage.plot import load_run
from higen.bugs.store import CAUSES_INDEX, RootCauseIndex
from rl_vs_random import campaign, finish_campaign, read_result, start_campaign

ROOT_KINDS = ("crash", "timeout", "error", "value", "nan_inf", "shape", "dtype")  # root-cause kinds
COVERAGE = ("structure_covered", "ort_transformers_covered", "tvm_py_covered")  # always reported
NUMERIC = ("bugs", *(f"bugs_{k}" for k in ROOT_KINDS), "noise_causes", "tests", "tests_per_s", "unique_signatures",
           "validity", "unique_tokens")


def run_metrics(run_dir: Path) -> dict:
    """Bugs (credible root causes, aliases found by reduction merged) by kind, from the run's
    ``root_causes.json``, and coverage at the end, from a finished run folder."""
    index = RootCauseIndex(run_dir).load() if (run_dir / CAUSES_INDEX).exists() else {}
    kinds = Counter(c.get("kind", "?") for c in index.values() if not c.get("noise") and not c.get("alias_of"))
    metrics = {f"bugs_{kind}": kinds.get(kind, 0) for kind in ROOT_KINDS}
    table = run_dir / "coverage_by_steps.csv"
    if table.exists():
        with open(table, newline="") as handle:
            for row in sorted(csv.DictReader(handle), key=lambda r: int(r["step"])):
                metrics.update({k: int(float(v)) if float(v).is_integer() else float(v) for k, v in row.items()
                                if k.endswith("_covered") and not k.startswith("gcovr_") and v not in ("", None)})
    return metrics


def curves(run_dirs: list[Path], grid: np.ndarray) -> dict[str, np.ndarray]:
    """Per curve name, one row per run: its value at each time of ``grid`` (seconds since the run's
    start; 0 before the first test). Names: unique signatures, tests, each coverage collector."""
    found: dict[str, list[np.ndarray]] = {}
    for path in run_dirs:
        run = load_run(path, path.name)
        named = {"bugs": [(t, v) for _, t, v in run.bugs], "unique signatures": [(t, v) for _, t, v in run.signatures],
                 "tests": [(t, i) for i, t, _ in run.signatures]}
        named.update({name: [(t, v) for _, t, v in points] for name, points in run.series.items()
                      if not name.endswith("(gcovr)")})
        for name, points in named.items():
            if not points or run.start is None:
                continue
            times = np.array([t - run.start for t, _ in points])
            values = np.array([v for _, v in points], dtype=float)
            at = np.searchsorted(times, grid, side="right") - 1
            found.setdefault(name, []).append(np.where(at >= 0, values[np.clip(at, 0, None)], 0.0))
    return {name: np.array(rows) for name, rows in found.items()}


def summarize(rows: list[dict], strategies: list[str], metrics: list[str]) -> list[dict]:
    summary = []
    for strategy in strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        for metric in metrics:
            summary.append({"strategy": strategy, "metric": metric, **spread(r.get(metric) for r in mine)})
    return summary


def plot(rows, summary, strategies, metrics, grid, by_strategy, out: Path, title: str) -> None:
    plt = pyplot()
    panels = [m for m in metrics if any(s["metric"] == m and s["n"] for s in summary)]
    names = ["bugs", "unique signatures", "tests"] + sorted({n for c in by_strategy.values() for n in c} -
                                                           {"bugs", "unique signatures", "tests"})
    width = max(len(panels), len(names))
    figure, axes = plt.subplots(2, width, figsize=(3.2 * width, 7), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for column, metric in enumerate(panels):
        axis = axes[0][column]
        for index, strategy in enumerate(strategies):
            stats = next(s for s in summary if s["strategy"] == strategy and s["metric"] == metric)
            if not stats["n"]:
                continue
            low, high = stats["mean"] - stats["min"], stats["max"] - stats["mean"]
            axis.bar(index, stats["mean"], yerr=[[low], [high]], capsize=4, color=colors[index % len(colors)])
            seeds = [r[metric] for r in rows if r["strategy"] == strategy and r.get(metric) not in (None, "")]
            axis.plot([index] * len(seeds), seeds, "k.", markersize=4)
        axis.set_xticks(range(len(strategies)), strategies)
        axis.set_title(metric, fontsize=9)
    minutes = grid / 60
    for column, name in enumerate(names):
        axis = axes[1][column]
        for index, strategy in enumerate(strategies):
            values = by_strategy[strategy].get(name)
            if values is None:
                continue
            color = colors[index % len(colors)]
            axis.plot(minutes, values.mean(axis=0), color=color, label=f"{strategy} (mean of {len(values)})")
            axis.fill_between(minutes, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2)
        axis.set_title(f"{name} over time", fontsize=9)
        axis.set_xlabel("minutes since start")
        axis.grid(alpha=0.3)
    axes[1][0].legend(fontsize=7)
    for row in axes:
        for axis in row:
            if not axis.has_data():
                axis.set_visible(False)
    save_figure(figure, out, title, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=30.0, help="campaign minutes per strategy and seed")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (FIRST_SEED, FIRST_SEED+1, ...)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--strategies", default="rl,random")
    parser.add_argument("--compiler", default="ort", choices=("ort", "tvm", "ov"), help="normal mode (default ort)")
    parser.add_argument("--diff-backends", help="diff mode instead, e.g. ort,tvm,ov")
    parser.add_argument("--coverage", default="auto", help="--coverage of every run (default auto)")
    parser.add_argument("--runs", type=Path, help="where the run folders go (default runs/campaign-<date-time>)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--from-runs", type=Path, metavar="RUNS",
                        help="summarize the run folders RUNS/<strategy>-<seed> of an earlier campaign instead of "
                             "running (same --budget-min, --seeds and --strategies)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run the strategies of one seed at the same time, each pinned to its own cores "
                             "(same conditions for each, half the time; each gets cores / strategies)")
    parser.add_argument("extra", nargs="*", help="after --: flags passed to every campaign")
    args = parser.parse_args()
    strategies = [s for s in args.strategies.split(",") if s]
    if args.budget_min <= 0 or args.seeds <= 0 or not strategies or set(strategies) - {"rl", "random", "nnsmith-default"}:
        parser.error("--budget-min and --seeds must be positive, --strategies among rl,random,nnsmith-default")
    budget_s = 60 * args.budget_min
    runs = args.from_runs or args.runs or Path("runs") / f"campaign-{time.strftime('%Y%m%d-%H%M%S')}"
    extra = ["--coverage", args.coverage, *(["--diff-backends", args.diff_backends] if args.diff_backends else []),
             *args.extra]
    targets = f"diff {args.diff_backends}" if args.diff_backends else f"normal {args.compiler}"
    out = console()
    load_before = machine_note()
    rows = []
    shares = core_shares(len(strategies)) if args.side_by_side else None
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run_dirs = {strategy: runs / f"{strategy}-{seed}" for strategy in strategies}
        if args.from_runs:
            results = [read_result(strategy, seed, budget_s, run_dirs[strategy]) for strategy in strategies]
        elif shares is None:
            results = []
            for strategy in strategies:
                out.print(f"{strategy}, seed {seed}: {budget_s:g} s on {targets} -> {run_dirs[strategy]} ...")
                results.append(campaign(strategy, seed, budget_s, args.compiler, run_dirs[strategy], extra))
        else:
            out.print(f"{', '.join(strategies)}, seed {seed}: {budget_s:g} s on {targets}, side by side on cores "
                      f"{' | '.join(','.join(map(str, sorted(c))) for c in shares)} ...")
            processes = [start_campaign(strategy, seed, budget_s, args.compiler, run_dirs[strategy], extra, cpus)
                         for strategy, cpus in zip(strategies, shares)]
            results = [finish_campaign(process, strategy, seed, budget_s, run_dirs[strategy])
                       for strategy, process in zip(strategies, processes)]
        rows += [{**result, "run_dir": run_dirs[result["strategy"]]} for result in results]
    for row in rows:
        row.update(run_metrics(row["run_dir"]), run_dir=str(row["run_dir"]))
    coverage = list(COVERAGE) + sorted({k for r in rows for k in r if k.endswith("_covered")} - set(COVERAGE))
    metrics = [*NUMERIC, *coverage]
    title = (f"{', '.join(strategies)} on {targets}, {args.budget_min:g} min x {args.seeds} seed(s), "
             f"{'side by side, ' if shares else ''}{time.strftime('%Y-%m-%d')}, "
             f"{f'summarized from {runs}' if args.from_runs else machine_note()}")
    columns = ["strategy", "seed", *metrics]
    labels = [f"{r['strategy']}-{r['seed']}" for r in rows]
    print_table(f"Campaigns: {title}", [{"metric": m, **{label: r.get(m) for label, r in zip(labels, rows)}}
                                        for m in metrics], ["metric", *labels], out)
    summary = summarize(rows, strategies, metrics)
    print_table("Mean ± standard deviation [min, max] over seeds (empty: not measured)",
                [{"metric": m, **{x["strategy"]: format_spread(x) for x in summary if x["metric"] == m}}
                 for m in metrics], ["metric", *strategies], out)
    out.print(f"machine: {load_before} before, {machine_note()} after")
    write_csv(args.out_dir / "campaign.csv", rows, [*columns, "budget_s", "verdicts", "run_dir"])
    write_csv(args.out_dir / "campaign_summary.csv", summary, ["strategy", "metric", "mean", "std", "min", "max", "n"])
    grid = np.linspace(0, budget_s, 121)
    by_strategy = {s: curves([Path(r["run_dir"]) for r in rows if r["strategy"] == s], grid) for s in strategies}
    plot(rows, summary, strategies, ["bugs", "noise_causes", "unique_signatures", "validity", "tests_per_s", *coverage],
         grid, by_strategy,
         args.out_dir / "campaign.png", title)
    higen("plot", *(r["run_dir"] for r in rows), "--labels", ",".join(labels),
          "--out", str(args.out_dir / "campaign_curves.png"), "--title", title)
    for name in ("campaign.csv", "campaign_summary.csv", "campaign.png", "campaign_curves.png"):
        out.print(f"wrote {args.out_dir / name}")
    out.print(f"runs kept in {runs}")
    return 0


def core_shares(parts: int) -> list[set[int]]:
    """The usable cores split into ``parts`` equal, disjoint sets (leftover cores stay unused)."""
    cores = sorted(os.sched_getaffinity(0))
    size = len(cores) // parts
    if size == 0:
        raise SystemExit(f"--side-by-side needs at least one core per strategy: {len(cores)} core(s) for {parts}")
    return [set(cores[i * size:(i + 1) * size]) for i in range(parts)]


def format_spread(stats: dict) -> str:
    if not stats["n"]:
        return ""
    if math.isclose(stats["min"], stats["max"]):
        return number(stats["mean"])
    return f"{number(stats['mean'])} ± {number(stats['std'], 2)} [{number(stats['min'])}, {number(stats['max'])}]"


def number(value: float, digits: int = 4) -> str:
    """Four significant digits, without an exponent for counts in the thousands."""
    return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


if __name__ == "__main__":
    sys.exit(main())
