"""What root-cause identification costs: the same campaign with and without it, tests/s side by side.

    git archive 9640766 | tar -x -C /tmp/higen-before      # the code before root causes (any ref)
    python experiments/bench_rootcause.py --before /tmp/higen-before --tests 1500 --seeds 0,1,2

Variants, each the same ``python -m higen.main --compiler ort --strategy random --seed S --max-tests N``
campaign (normal-mode ONNX Runtime, one pipeline), run one after the other and interleaved per seed
so that a change in machine load hits all of them alike:

- ``before``: the code tree given by ``--before`` (on ``PYTHONPATH``, so its ``higen`` is imported);
- ``after``: this tree, root causes and background reduction on (the defaults);
- ``after-off``: this tree with ``--root-causes off --reduce off``.

Per run, from its ``training.log``: tests, campaign seconds (start-up excluded), tests/s, bugs and
root causes of noise (``after`` only), signatures, findings, and the seconds spent localizing
(``locate_s``). Writes bench_rootcause.csv under --out-dir.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, console, machine_note, print_table, read_events, spread, write_csv

COLUMNS = ["variant", "seed", "tests", "wall_s", "tests_per_s", "bugs", "noise_causes", "signatures", "findings",
           "locate_s"]


def run(variant: str, seed: int, tests: int, before: Path | None, root: Path) -> dict:
    env = dict(os.environ)
    flags = ["--root-causes", "off", "--reduce", "off"] if variant == "after-off" else []
    if variant == "before":
        env["PYTHONPATH"] = f"{before}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(before)
    run_dir = (root / f"{variant}-{seed}").resolve()
    command = [sys.executable, "-m", "higen.main", "--compiler", "ort", "--strategy", "random", "--seed", str(seed),
               "--max-tests", str(tests), "--run-root", str(run_dir), "--no-session-subdir", "--no-progress", *flags]
    # python -m puts the working folder first on sys.path: run where the variant's higen is found
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          cwd=before if variant == "before" else Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"{variant} seed {seed} failed: {done.stderr.strip()[-1500:]}")
    events = read_events(run_dir)
    end = next(e for e in reversed(events) if e["event"] == "end")
    per_test = [e for e in events if e["event"] == "test"]
    return {"variant": variant, "seed": seed, "tests": end["tests"], "wall_s": round(end["wall_s"], 1),
            "tests_per_s": round(end["tests"] / end["wall_s"], 2), "bugs": end.get("bugs", ""),
            "noise_causes": end.get("noise_causes", ""), "signatures": end["unique_signatures"],
            "findings": sum(bool(e["findings"]) for e in per_test),
            "locate_s": round(sum(e["timings"].get("locate_s", 0.0) for e in per_test), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a code tree without root causes (see above); omitted: "
                                                    "only after and after-off")
    parser.add_argument("--tests", type=int, default=1500)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.before and not (args.before / "higen" / "__init__.py").is_file():
        parser.error(f"--before {args.before} holds no higen package")
    variants = (["before"] if args.before else []) + ["after", "after-off"]
    out = console()
    note = machine_note()
    rows = []
    with tempfile.TemporaryDirectory(prefix="higen-bench-rootcause-") as scratch:
        for seed in (int(s) for s in args.seeds.split(",")):
            for variant in variants:
                out.print(f"{variant}, seed {seed}: {args.tests} tests ...")
                rows.append(run(variant, seed, args.tests, args.before, Path(scratch)))
    print_table(f"Root-cause identification, {args.tests} tests per run ({note} before, {machine_note()} after)",
                rows, COLUMNS, out)
    summary = [{"variant": v, **spread(r["tests_per_s"] for r in rows if r["variant"] == v)} for v in variants]
    print_table("tests/s over seeds", summary, ["variant", "mean", "std", "min", "max", "n"], out)
    write_csv(args.out_dir / "bench_rootcause.csv", rows, COLUMNS)
    out.print(f"wrote {args.out_dir / 'bench_rootcause.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
