"""Throughput of several pipelines: tests/s with 1 and 2 local workers and on a simulated two-node Ray
cluster (one CPU slot per node, started here), for the random baseline and the RL campaign.

    python experiments/scaling.py --tests 300                    # the figures in docs/scaling.md
    python experiments/scaling.py --tests 60 --strategies random  # a quick look

Each setting is one ``python -m higen.main`` campaign (ONNX Runtime normal mode, same seed and budget),
run one after the other so each has the whole machine. tests/s is the campaign's own figure from its
``training.log`` ``end`` line: start-up and op-support learning (cached) excluded. Prints a table with
the ratio to one worker and writes a CSV (default ``experiments/results/scaling.csv``).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

COLUMNS = ("strategy", "setting", "tests", "wall_s", "tests_per_s", "ratio_to_1_worker", "unique_signatures")


def campaign(strategy: str, tests: int, flags: list[str], run_dir: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "higen.main", "--strategy", strategy, "--compiler", "ort", "--seed", "0",
               "--max-tests", str(tests), "--run-root", str(run_dir), "--no-session-subdir", "--no-progress",
               "--reward", "high.tests_per_s=0", *flags, *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{strategy} {flags} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    events = [json.loads(line) for line in (run_dir / "training.log").read_text().splitlines()]
    end = next(e for e in reversed(events) if e["event"] == "end")
    return {"tests": end["tests"], "wall_s": round(end["wall_s"], 2),
            "tests_per_s": round(end["tests"] / end["wall_s"], 2), "unique_signatures": end["unique_signatures"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=300, help="tests per campaign")
    parser.add_argument("--strategies", default="random,rl")
    parser.add_argument("--no-ray", action="store_true", help="local workers only")
    parser.add_argument("--csv", type=Path, default=Path("experiments/results/scaling.csv"))
    parser.add_argument("extra", nargs="*", help="flags after -- go to every campaign")
    args = parser.parse_args()
    settings = [("1 worker", ["--workers", "1"]), ("2 workers", ["--workers", "2"])]
    cluster = None
    if not args.no_ray:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        settings.append(("ray, 2 nodes x 1 CPU", ["--ray-address", cluster.address]))
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="higen-scaling-") as scratch:
            for strategy in args.strategies.split(","):
                base = None
                for k, (name, flags) in enumerate(settings):
                    row = {"strategy": strategy, "setting": name,
                           **campaign(strategy, args.tests, flags, Path(scratch) / f"{strategy}-{k}", args.extra)}
                    base = base or row["tests_per_s"]
                    row["ratio_to_1_worker"] = round(row["tests_per_s"] / base, 2)
                    rows.append(row)
                    print(row, flush=True)
    finally:
        if cluster is not None:
            cluster.shutdown()
    table = Table(title=f"HiGen scaling: ONNX Runtime, {args.tests} tests per campaign")
    for column in COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in COLUMNS))
    Console().print(table)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
