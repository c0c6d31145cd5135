"""RL against the random baseline: the same wall-clock budget, seeds, compiler and decoder.

    python experiments/rl_vs_random.py --budget-s 1800 --seeds 0,1,2          # the full comparison
    python experiments/rl_vs_random.py --budget-s 180 --seeds 0 -- --max-nodes 8   # flags after -- go to both

Each (strategy, seed) is one ``python -m higen.main`` campaign with ``--max-seconds`` (start-up and
op-support learning excluded), run one after the other so each has the whole machine. From its
``training.log``: bugs (credible root causes), root causes of noise, unique signatures, validity ratio (tests neither invalid nor unsupported),
structure coverage (distinct tokens seen: ops, edges, dtype/rank per op, bucketed attributes) and
tests/s. Prints a table and writes a CSV (default ``experiments/results/rl_vs_random.csv``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

STRATEGIES = ("rl", "random")
COLUMNS = ("strategy", "seed", "budget_s", "tests", "tests_per_s", "bugs", "noise_causes", "unique_signatures",
           "validity", "unique_tokens", "verdicts")


def start_campaign(strategy: str, seed: int, budget_s: float, compiler: str, run_dir: Path, extra: list[str],
                   cpus: set[int] | None = None) -> subprocess.Popen:
    """Launch one campaign; with ``cpus`` it and all its workers are pinned to those cores, so that
    campaigns running side by side each get the same share of the machine."""
    command = [sys.executable, "-m", "higen.main", "--strategy", strategy, "--seed", str(seed), "--compiler", compiler,
               "--max-seconds", str(budget_s), "--big-epochs", "1000000", "--run-root", str(run_dir),
               "--no-session-subdir", "--no-progress", *extra]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pin)


def finish_campaign(process: subprocess.Popen, strategy: str, seed: int, budget_s: float, run_dir: Path) -> dict:
    """Wait for a campaign from ``start_campaign`` and read its results from ``training.log``."""
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{strategy} seed {seed} failed ({process.returncode}): {stderr.strip()[-2000:]}")
    return read_result(strategy, seed, budget_s, run_dir)


def read_result(strategy: str, seed: int, budget_s: float, run_dir: Path) -> dict:
    """A finished campaign's figures, from the ``end`` event of its ``training.log``."""
    log = run_dir / "training.log"
    if not log.exists():
        raise SystemExit(f"{run_dir}: no training.log, not a finished campaign")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    end = next(e for e in reversed(events) if e["event"] == "end")
    tests, verdicts = end["tests"], end["verdicts"]
    invalid = verdicts.get("invalid", 0) + verdicts.get("unsupported", 0)
    return {"strategy": strategy, "seed": seed, "budget_s": budget_s, "tests": tests,
            "tests_per_s": round(tests / end["wall_s"], 2) if end["wall_s"] else 0.0,
            "bugs": end.get("bugs", ""), "noise_causes": end.get("noise_causes", ""),  # "": logged before root causes
            "unique_signatures": end["unique_signatures"],
            "validity": round(1 - invalid / tests, 4) if tests else 0.0,
            "unique_tokens": end["unique_tokens"], "verdicts": json.dumps(verdicts, sort_keys=True)}


def campaign(strategy: str, seed: int, budget_s: float, compiler: str, run_dir: Path, extra: list[str]) -> dict:
    """One campaign with the whole machine."""
    process = start_campaign(strategy, seed, budget_s, compiler, run_dir, extra)
    return finish_campaign(process, strategy, seed, budget_s, run_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=1800.0, help="campaign seconds per strategy and seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--compiler", default="ort", choices=("ort", "tvm", "ov"))
    parser.add_argument("--runs", type=Path, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--csv", type=Path, default=Path(__file__).parent / "results" / "rl_vs_random.csv")
    parser.add_argument("extra", nargs="*", help="after --: flags passed to both campaigns")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    console = Console(width=max(120, Console().width))
    rows = []
    with tempfile.TemporaryDirectory(prefix="higen-rl-vs-random-") as scratch:
        root = args.runs or Path(scratch)
        for seed in seeds:
            for strategy in STRATEGIES:
                console.print(f"{strategy}, seed {seed}: {args.budget_s:g} s on {args.compiler} ...")
                rows.append(campaign(strategy, seed, args.budget_s, args.compiler, root / f"{strategy}-{seed}",
                                     args.extra))
    table = Table(title=f"RL vs random, {args.budget_s:g} s per campaign on {args.compiler}")
    for column in COLUMNS[:-1]:
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in COLUMNS[:-1]))
    if len(seeds) > 1:
        for strategy in STRATEGIES:
            mine = [r for r in rows if r["strategy"] == strategy]
            table.add_row(f"{strategy} (mean)", "", "", *(f"{statistics.mean(r[c] for r in mine):.2f}"
                                                        for c in COLUMNS[3:-1]))
    console.print(table)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    console.print(f"CSV: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
