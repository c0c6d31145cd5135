"""Does branch coverage of an instrumented TVM in the reward help? RL with it, RL without it, random.

    ~/.cache/higen/tvm-cov-venv/bin/python experiments/gcov_reward.py --budget-s 360 --seeds 1,2,3 \
        --runs experiments/results/tvm-gcov-reward

Run it with the Python of the instrumented build's virtualenv (``experiments/build_instrumented_tvm.sh``):
the campaigns run under the same interpreter. Every arm collects the same coverage (``gcov_tvm`` from
``--tvm-cov-src/--tvm-cov-build`` and ``tvm_py``), so its coverage is measured the same way; the arms
differ only in what the strategy does with it:

- ``rl-gcov``: the RL with its default reward, whose coverage terms (``low.coverage``,
  ``high.coverage``, weight 1) count the new gcov and tvm_py features of each test;
- ``rl``: the same RL with both coverage weights 0 (it optimizes credible bugs only);
- ``random``: the random baseline.

Campaigns run one after the other (each has the machine), seeds outer, arms inner, for
``--budget-s`` campaign seconds each (start-up excluded), in normal mode on TVM (O0 against O3).
Reported per campaign, from its ``training.log`` and ``coverage_by_steps.csv``: tests, bugs (credible
root causes), root causes of noise, HiGen's gcov branch union (``gcov_tvm_covered``, gcovr's branch
count of the same data) and tvm_py arcs. gcovr itself does not run (``--cov-every 0
--no-final-gcovr``): on the full TVM build one run takes longer than a campaign here.
Writes a CSV and, per seed, the curves (``higen plot``: each collector by tests and by time).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rl_vs_random import finish_campaign, read_result, start_campaign  # noqa: E402

ARMS = {"rl-gcov": ("rl", []),
        "rl": ("rl", ["--reward", "low.coverage=0", "--reward", "high.coverage=0"]),
        "random": ("random", [])}
COVERAGE = ("gcov_tvm_covered", "tvm_py_covered")
COLUMNS = ("arm", "seed", "tests", "bugs", "noise_causes", "unique_signatures", *COVERAGE)


def last_coverage_row(run_dir: Path) -> dict[str, str]:
    with open(run_dir / "coverage_by_steps.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"{run_dir}: coverage_by_steps.csv has no rows")
    return rows[-1]


def run_arm(arm: str, seed: int, budget_s: float, run_dir: Path, build: list[str]) -> dict:
    strategy, flags = ARMS[arm]
    if not (run_dir / "training.log").exists():
        process = start_campaign(strategy, seed, budget_s, "tvm", run_dir, [*build, "--cov-every", "0", "--no-final-gcovr", *flags])
        finish_campaign(process, strategy, seed, budget_s, run_dir)
    result = read_result(strategy, seed, budget_s, run_dir)
    last = last_coverage_row(run_dir)
    return {"arm": arm, **{k: result[k] for k in ("seed", "tests", "bugs", "noise_causes", "unique_signatures")},
            **{k: int(last[k]) if last.get(k) else "" for k in COVERAGE}}


def plot(runs: Path, arms: list[str], seed: int) -> None:
    """``higen plot`` of one seed's campaigns: each collector (gcov_tvm, tvm_py, ...) by tests and by time."""
    subprocess.run([sys.executable, "-m", "higen.main", "plot", *(str(runs / f"{arm}-{seed}") for arm in arms),
                    "--labels", ",".join(arms), "--out", str(runs / f"curves_seed{seed}.png"),
                    "--title", f"instrumented TVM, seed {seed}"], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=360.0, help="campaign seconds per arm and seed")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--tvm-cov-src", default=str(Path.home() / ".cache/higen/tvm-src"))
    parser.add_argument("--tvm-cov-build", default=str(Path.home() / ".cache/higen/tvm-cov-build"))
    parser.add_argument("--runs", type=Path, required=True, help="the campaigns' folders (finished ones are read, not rerun)")
    parser.add_argument("extra", nargs="*", help="after --: flags passed to every campaign")
    args = parser.parse_args()
    seeds, arms = [int(s) for s in args.seeds.split(",")], args.arms.split(",")
    build = ["--tvm-cov-src", args.tvm_cov_src, "--tvm-cov-build", args.tvm_cov_build, *args.extra]
    console = Console(width=max(120, Console().width))
    rows = []
    for seed in seeds:
        for arm in arms:
            console.print(f"{arm}, seed {seed}: {args.budget_s:g} s on instrumented TVM ...")
            rows.append(run_arm(arm, seed, args.budget_s, args.runs / f"{arm}-{seed}", build))
    table = Table(title=f"gcov in the reward, {args.budget_s:g} s per campaign, instrumented TVM")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "arm" else "right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in COLUMNS))
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        table.add_row(f"{arm} (mean ± sd)", "", *(_spread([r[c] for r in mine]) for c in COLUMNS[2:]))
    console.print(table)
    with open(args.runs / "gcov_reward.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for seed in seeds:
        plot(args.runs, arms, seed)
    console.print(f"CSV and plots: {args.runs}")
    return 0


def _spread(values: list) -> str:
    numbers = [float(v) for v in values if v != ""]
    if not numbers:
        return ""
    sd = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    return f"{statistics.mean(numbers):.1f} ± {sd:.1f}"


if __name__ == "__main__":
    sys.exit(main())
