"""Run a diff-mode campaign (ONNX Runtime, OpenVINO, TVM on CPU), then reduce every saved bug case and
report the node counts before and after, and the median reduced size.

    python experiments/reduce_campaign.py [--tests 200] [--seed 0] [--strategy rl|random] [--run-root DIR]

The campaign is the ordinary command line (``python -m higen.main --diff-backends ort,ov,tvm``);
each case is reduced for its own signature with :func:`higen.bugs.reduce.reduce_case`, exactly as
``higen reduce CASE`` does. Results also go to ``<session>/reduce_campaign.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from higen.bugs.case import CaseError, load_case
from higen.bugs.reduce import reduce_case


def campaign(run_root: Path, tests: int, seed: int, strategy: str | None) -> Path:
    command = [sys.executable, "-m", "higen.main", "--diff-backends", "ort,ov,tvm", "--max-tests", str(tests),
               "--seed", str(seed), "--run-root", str(run_root), "--no-progress"]
    if strategy:
        command += ["--strategy", strategy]
    print("$", " ".join(command), flush=True)
    began = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"campaign: {time.perf_counter() - began:.0f} s", flush=True)
    return run_root / (run_root / "LATEST").read_text().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-root", type=Path, help="default: a fresh temporary folder")
    parser.add_argument("--strategy", help="passed to the campaign (default: the command line's default)")
    parser.add_argument("--max-candidates", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per candidate and target")
    args = parser.parse_args()
    run_root = args.run_root or Path(tempfile.mkdtemp(prefix="higen-reduce-campaign-"))
    session = campaign(run_root, args.tests, args.seed, args.strategy)
    rows = []
    for directory in sorted(p for p in (session / "bug_cases").iterdir() if p.is_dir()):
        try:
            case = load_case(directory)
        except CaseError as error:
            print(f"skipping: {error}")
            continue
        result, folder = reduce_case(case, timeout_s=args.timeout, max_candidates=args.max_candidates)
        ops = sorted({n.op_type for n in result.best.model.graph.node}) if folder else []
        rows.append({"case": directory.name, "signature": case.signature, "reproduced": result.reproduced,
                     "before": result.nodes_before, "after": result.nodes_after if folder else None,
                     "candidates": result.tried, "seconds": round(result.seconds, 2), "source": result.source,
                     "ops": ops})
        row = rows[-1]
        print(f"{row['case']:<28} {row['before']:>4} -> {row['after'] if folder else '(no repro)':>4}  "
              f"{row['candidates']:>4} candidates {row['seconds']:>6.1f} s  {' '.join(ops)}  {case.signature[:90]}",
              flush=True)
    reduced = [r for r in rows if r["after"] is not None]
    summary = {"session": str(session), "cases": len(rows), "reduced": len(reduced),
               "median_before": statistics.median(r["before"] for r in reduced) if reduced else None,
               "median_after": statistics.median(r["after"] for r in reduced) if reduced else None,
               "rows": rows}
    (session / "reduce_campaign.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(rows)} cases, {len(reduced)} reduced with the same signature; median nodes "
          f"{summary['median_before']} -> {summary['median_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
