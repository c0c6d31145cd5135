"""Per-test determinism at campaign scale: the same random campaign (same seed) serially and with
``--workers 2`` pipelines; every test's seed, config, graph size, verdict and findings compared.

    nice -n 10 python experiments/determinism.py --tests 300 --out experiments/results/determinism.json

Before per-test seeding (see docs/architecture.md, "Per-test determinism"), 1 verdict of 300 differed,
because a test's inputs depended on which generator process built it and when.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIELDS = ("seed", "config", "n_nodes", "verdict", "findings")


def campaign(run_dir: Path, workers: int, args: argparse.Namespace) -> tuple[list[dict], float]:
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "higen.main", "--strategy", "random", "--compiler", args.compiler,
                    "--max-tests", str(args.tests), "--max-nodes", str(args.max_nodes), "--seed", str(args.seed),
                    "--workers", str(workers), "--no-progress", "--run-root", str(run_dir), "--no-session-subdir"],
                   check=True, capture_output=True, text=True)
    events = [json.loads(line) for line in (run_dir / "training.log").read_text().splitlines()]
    return [e for e in events if e["event"] == "test"], time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--max-nodes", type=int, default=10)
    parser.add_argument("--compiler", default="ort")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        serial, serial_s = campaign(Path(scratch) / "serial", 1, args)
        parallel, parallel_s = campaign(Path(scratch) / "parallel", 2, args)
    differing = [{"index": a["index"], "serial": {f: a[f] for f in FIELDS[2:]}, "workers2": {f: b[f] for f in FIELDS[2:]}}
                 for a, b in zip(serial, parallel) if any(a[f] != b[f] for f in FIELDS)]
    report = {"tests": len(serial), "tests_workers2": len(parallel), "identical": len(serial) - len(differing),
              "differing": differing, "serial_s": round(serial_s, 1), "workers2_s": round(parallel_s, 1),
              "verdicts": {v: sum(t["verdict"] == v for t in serial) for v in sorted({t["verdict"] for t in serial})},
              "settings": vars(args) | {"out": str(args.out)}}
    print(json.dumps({k: v for k, v in report.items() if k != "differing"}, indent=1))
    for entry in differing[:10]:
        print("differs:", entry)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
