"""Memory over a long campaign: resident memory of the driver and of every worker, test by test.

    python experiments/memory.py --tests 5000            # the full check (target: growth under 20%)
    python experiments/memory.py --tests 1000 --compiler ort -- --max-nodes 8   # flags after -- go to higen

Runs ``python -m higen.main --strategy random --max-tests N`` (ONNX Runtime in normal mode by
default) and samples, every --interval seconds, VmRSS (/proc/<pid>/status) of the driver and of each
of its descendants (named by their command line: ``generator``, ``ort:cpu:O3``, ...), with the number
of tests logged so far in its ``training.log``. Per process: RSS at test --from-test (median of the
samples taken while tests FROM..FROM+W were done, W = max(5, N/50)), at the end (median over the
last W tests), the growth between them, the maximum, and the worker restarts (a new pid under the
same name: a planned recycle of a backend worker every ``--recycle-after`` tests, or a restart after a
crash or the memory cap; growth is what the process under that name holds at the end against test
FROM, whichever pid it is, and the maximum shows the peaks in between). Writes memory.csv (per process), memory_samples.csv and
memory.png under --out-dir; the run folder stays in --runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (RESULTS, console, descendants, machine_note, print_table, pyplot, read_events, rss_mb,
                    save_figure, write_csv)

TARGET_GROWTH_PCT = 20.0
COLUMNS = ("process", "pids", "rss_test1_mb", "rss_at_from_mb", "rss_at_end_mb", "growth_pct", "max_mb", "within_target")


def process_name(pid: int) -> str | None:
    """``generator`` or the target a worker serves, from its command line (``-m MODULE ARGS``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if "-m" in argv[:-1]:
        module, rest = argv[argv.index("-m") + 1], [a for a in argv[argv.index("-m") + 2:] if a]
        if module == "higen.generation.serve":
            return "generator"
        if module == "higen.bugs.analyst_serve":
            return "analyst"
        if module == "higen.backends.serve" and rest:
            return rest[0]
        return module
    return Path(argv[0]).name or None


class TestCounter:
    """Counts the ``test`` lines of a growing training.log, reading only what was appended."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial, self.count = path, 0, b"", 0

    def read(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return self.count
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        self.count += sum(line.startswith(b'{"event": "test"') for line in lines)
        return self.count


def sample(driver: subprocess.Popen, counter: TestCounter, interval_s: float) -> list[dict]:
    """Sample until the driver exits: one row per (sample, living process)."""
    samples, began = [], time.perf_counter()
    while driver.poll() is None:
        tests = counter.read()
        now = round(time.perf_counter() - began, 3)
        for pid in [driver.pid, *descendants(driver.pid)]:
            name = "driver" if pid == driver.pid else process_name(pid)
            if name == "higen.main":  # the driver forked, not yet exec'd (a worker starting)
                continue
            memory = rss_mb(pid)
            if name and memory is not None:
                samples.append({"time_s": now, "tests": tests, "process": name, "pid": pid, "rss_mb": round(memory, 1)})
        time.sleep(interval_s)
    return samples


def summarize(samples: list[dict], tests: int, from_test: int) -> list[dict]:
    window = max(5, tests // 50)
    rows = []
    for name in dict.fromkeys(s["process"] for s in samples):
        mine = [s for s in samples if s["process"] == name]
        at_from = [s["rss_mb"] for s in mine if from_test <= s["tests"] <= from_test + window]
        at_end = [s["rss_mb"] for s in mine if s["tests"] >= tests - window]
        start, end = (round(statistics.median(v), 1) if v else None for v in (at_from, at_end))
        growth = 100 * (end - start) / start if start and end else None
        pids = list(dict.fromkeys(s["pid"] for s in mine))
        rows.append({"process": name, "pids": len(pids), "restarts": len(pids) - 1, "rss_test1_mb": next((s["rss_mb"] for s in mine if s["tests"] >= 1), None),
                     "rss_at_from_mb": start, "rss_at_end_mb": end,
                     "growth_pct": round(growth, 1) if growth is not None else None,
                     "max_mb": max(s["rss_mb"] for s in mine),
                     "within_target": "" if growth is None else "yes" if growth < TARGET_GROWTH_PCT else "NO"})
    return rows


def plot(samples: list[dict], from_test: int, out: Path, title: str) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(10, 5))
    for name in dict.fromkeys(s["process"] for s in samples):
        mine = [s for s in samples if s["process"] == name and s["tests"] > 0]
        axis.plot([s["tests"] for s in mine], [s["rss_mb"] for s in mine], ".-", markersize=2, label=name)
    axis.axvline(from_test, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel("tests done")
    axis.set_ylabel("RSS (MiB)")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, out, title)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=5000)
    parser.add_argument("--from-test", type=int, default=500, help="growth is measured from this test to the end")
    parser.add_argument("--compiler", default="ort", choices=("ort", "tvm", "ov"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between samples")
    parser.add_argument("--runs", type=Path, help="the run folder (default runs/memory-<date-time>)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("extra", nargs="*", help="after --: flags passed to the campaign")
    args = parser.parse_args()
    if not 0 < args.from_test < args.tests or args.interval <= 0:
        parser.error("need 0 < --from-test < --tests and a positive --interval")
    run_dir = args.runs or Path("runs") / f"memory-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    out = console()
    load_before = machine_note()
    out.print(f"random campaign, {args.tests} tests on {args.compiler} -> {run_dir} (sampling every {args.interval:g} s) ...")
    command = [sys.executable, "-m", "higen.main", "--strategy", "random", "--compiler", args.compiler,
               "--max-tests", str(args.tests), "--seed", str(args.seed), "--run-root", str(run_dir),
               "--no-session-subdir", "--no-progress", *args.extra]
    with open(run_dir / "driver_output.txt", "w") as output:
        driver = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        samples = sample(driver, TestCounter(run_dir / "training.log"), args.interval)
    if driver.returncode != 0:
        raise SystemExit(f"the campaign failed ({driver.returncode}): see {run_dir / 'driver_output.txt'}")
    end = next(e for e in reversed(read_events(run_dir)) if e["event"] == "end")
    rows = summarize(samples, end["tests"], args.from_test)
    title = (f"RSS, random campaign on {args.compiler}, {end['tests']} tests in {end['wall_s']:.0f} s "
             f"({end['tests'] / end['wall_s']:.1f}/s), {time.strftime('%Y-%m-%d')}, {machine_note()}")
    print_table(f"{title}\ngrowth from test {args.from_test} to the end (target: under {TARGET_GROWTH_PCT:g}%)",
                rows, [*COLUMNS[:2], "restarts", *COLUMNS[2:]], out)
    out.print(f"{len(samples)} samples; verdicts {end['verdicts']}; machine: {load_before} before")
    write_csv(args.out_dir / "memory.csv", rows, [*COLUMNS[:2], "restarts", *COLUMNS[2:]])
    write_csv(args.out_dir / "memory_samples.csv", samples)
    plot(samples, args.from_test, args.out_dir / "memory.png", title)
    for name in ("memory.csv", "memory_samples.csv", "memory.png"):
        out.print(f"wrote {args.out_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
