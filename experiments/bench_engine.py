"""Engine throughput: tests/s and where the wall time goes, for normal-mode ORT and diff-mode ORT+TVM+OV.

    python experiments/bench_engine.py --tests 300 --nodes 10

Each test is NNSmith's default kind (symbolic-cinit, gradient input search, ``--nodes`` nodes) with
a fresh seed, so the figures compare with NNSmith's own loop. Generation of test i+1 overlaps the
execution of test i, so "generation busy" and "backends busy" may add up to more than 100%.
"in generation + backends" is the share of wall time the main loop spends waiting on them; the
rest is the loop's own cost (judging, bug store, logging). Op-support learning is done before the
clock starts (it is cached per runtime version).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from higen.engine import Engine, EngineSettings
from higen.generation.config import GenConfig
from higen.modes import diff_plan, normal_plan

HEAVY_MODULES = ("torch", "tvm", "openvino", "onnxruntime", "nnsmith")


def bench(name: str, plan, tests: int, nodes: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as run_dir, Engine(EngineSettings(plan=plan), Path(run_dir)) as engine:
        engine.start()
        pids = {n: w.proc.pid for n, w in engine.pool.workers.items()} | {"gen": engine.generator.worker.proc.pid}
        totals: dict[str, float] = {}
        began = time.perf_counter()
        engine.submit(GenConfig(max_nodes=nodes, seed=seed))
        for index in range(1, tests + 1):
            following = GenConfig(max_nodes=nodes, seed=seed + index) if index < tests else None
            result = engine.finish(prefetch=following)
            for key, value in result.timings.items():
                totals[key] = totals.get(key, 0.0) + value
        wall = time.perf_counter() - began
        pids_after = {n: w.proc.pid for n, w in engine.pool.workers.items() if w.proc} | \
                     {"gen": engine.generator.worker.proc.pid}
        restarts = sum(w.restarts for w in engine.pool.workers.values()) + engine.generator.worker.restarts
        waiting = totals.get("gen_wait_s", 0.0) + totals.get("exec_s", 0.0)
        return {
            "setting": name, "tests": tests, "wall_s": round(wall, 2), "tests_per_s": round(tests / wall, 2),
            "generation_busy_pct": round(100 * totals.get("gen_s", 0.0) / wall, 1),
            "backends_busy_pct": round(100 * totals.get("exec_s", 0.0) / wall, 1),
            "in_gen_plus_backends_pct": round(100 * waiting / wall, 1),
            "loop_own_pct": round(100 * (wall - waiting) / wall, 1),
            "verdicts": dict(engine.verdicts),
            "worker_restarts": restarts,
            "workers_kept": pids == pids_after,
            **{f"{k[:-2]}_ms_per_test": round(1000 * v / tests, 2) for k, v in totals.items()
               if k.endswith("_s") and ":" in k},
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default="normal-ort,diff-ort-tvm-ov")
    parser.add_argument("--csv", type=Path, default=Path("experiments/results/bench_engine.csv"))
    args = parser.parse_args()
    plans = {"normal-ort": lambda: normal_plan("ort"), "diff-ort-tvm-ov": lambda: diff_plan(["ort", "tvm", "ov"], "cpu")}
    rows = [bench(name, plans[name](), args.tests, args.nodes, args.seed) for name in args.settings.split(",")]
    table = Table(title=f"HiGen engine, {args.nodes}-node models, {args.tests} tests per setting")
    for key in ("setting", "tests_per_s", "generation_busy_pct", "backends_busy_pct", "in_gen_plus_backends_pct",
                "loop_own_pct", "worker_restarts", "workers_kept", "verdicts"):
        table.add_column(key)
    for row in rows:
        table.add_row(*(str(row[c.header]) for c in table.columns))
    Console().print(table)
    for row in rows:
        print(row["setting"], {k: v for k, v in row.items() if k.endswith("_ms_per_test")})
    leaked = [m for m in HEAVY_MODULES if m in sys.modules]
    print(f"runtimes imported by the main process: {leaked or 'none'} (each worker imports its runtime once)")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
