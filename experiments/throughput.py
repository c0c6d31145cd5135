"""Throughput: tests/s and where the wall time goes, HiGen against NNSmith's own loop.

    python experiments/throughput.py --tests 50 --nodes 5,10,20

For each node count, in this order and on the same settings (NNSmith's default kind of test:
symbolic-cinit, gradient input search, HiGen's default dtypes, seeds SEED, SEED+1, ...):

- ``higen normal-ort`` and ``higen diff-ort-tvm-ov``: HiGen's engine (``bench_engine.bench``),
  generation of test i+1 overlapping the execution of test i;
- ``nnsmith fuzz``: NNSmith 0.1.0's own fuzzing loop on ONNX Runtime (``python -m nnsmith.cli.fuzz``)
  for ``--nnsmith-fuzz-s`` seconds, with a fresh op/dtype cache. When it makes no test, the reason
  is found (its log, then NNSmith's ONNX export and ORT backend tried on a one-operator model) and
  printed;
- ``nnsmith gen only``: NNSmith's generation alone in a fresh process (model_gen, TorchModelCPU,
  refine_weights, make_oracle; one torch thread, like HiGen's generator worker; the operators and
  dtypes of HiGen's default config before its op-support filter). The reference for the ratios.

Shares of wall time: ``gen_pct`` the generator's own time, ``<target>_pct`` each backend's compile
and run time, ``loop_own_pct`` the main loop's own time (judging, bug store, logging). Generation
overlaps execution and backends run in parallel, so shares may add up to more than 100%. Start-up
and op-support learning are not timed. Writes throughput.csv and throughput.png under --out-dir.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_engine import bench
from common import RESULTS, console, machine_note, print_table, pyplot, save_figure, write_csv

HIGEN_SETTINGS = ("normal-ort", "diff-ort-tvm-ov")
FUZZ, REFERENCE = "nnsmith fuzz", "nnsmith gen only"
MARKER = "NNSMITH-RESULT "  # prefix of the JSON line the NNSmith helper process prints
COLUMNS = ("setting", "nodes", "tests", "invalid", "wall_s", "tests_per_s", "x_nnsmith_gen", "gen_ms_per_test",
           "gen_x_nnsmith", "gen_pct", "backends_pct", "loop_own_pct")  # then <target>_pct, verdicts, note


# -- NNSmith, in a helper process (this one never imports torch or NNSmith) --------------------------
def nnsmith_generate(nodes: int, tests: int, seed: int) -> dict:
    """NNSmith's generation alone, timed per phase (runs in the helper process)."""
    import torch
    from nnsmith.abstract.dtype import DType
    from nnsmith.graph_gen import model_gen
    from nnsmith.materialize.torch import TorchModelCPU

    from higen.generation.config import GenConfig
    from higen.generation.nnsmith_build import select_opset  # also sets NNSmith's torch seed setter

    torch.set_num_threads(1)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # HiGen's worker pays this lazy import at start too
    config = GenConfig(max_nodes=nodes)
    opset = select_opset(config, None)
    phases = Counter()
    failures: Counter[str] = Counter()
    for index in range(tests):
        clock = time.perf_counter()
        try:
            generator = model_gen(opset=opset, method=config.method, seed=seed + index, max_nodes=nodes,
                                  timeout_ms=config.z3_timeout_ms, max_elem_per_tensor=config.max_elems,
                                  rank_choices=list(config.ranks), dtype_choices=[DType.from_str(d) for d in config.dtypes])
            ir = generator.make_concrete()
            clock = lap(phases, "model_gen", clock)
            model = TorchModelCPU.from_gir(ir)
            clock = lap(phases, "TorchModelCPU", clock)
            model.refine_weights()
            clock = lap(phases, "refine_weights", clock)
            model.make_oracle()
            lap(phases, "make_oracle", clock)
        except Exception as exc:  # counted like HiGen's invalid tests, its time included
            lap(phases, "failed", clock)
            failures[type(exc).__name__] += 1
    return {"tests": tests, "invalid": sum(failures.values()), "failures": dict(failures), "phases_s": dict(phases),
            "ops": len(opset)}


def lap(phases: Counter, name: str, since: float) -> float:
    now = time.perf_counter()
    phases[name] += now - since
    return now


def nnsmith_diagnose() -> dict:
    """Why NNSmith's own loop cannot test ONNX Runtime: its ONNX export and its ORT backend, each
    tried on a one-operator (ReLU, float32) model."""
    import contextlib
    import io

    from nnsmith.backends.factory import BackendFactory
    from nnsmith.graph_gen import model_gen
    from nnsmith.materialize import BugReport, Model

    model_type = Model.init("onnx", backend_target="cpu")
    relu = [op for op in model_type.operators() if op.__name__ == "ReLU"]
    model = model_type.from_gir(model_gen(opset=relu, seed=0, max_nodes=1, dtype_choices=["float32"]).make_concrete())
    found = {}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            _ = model.native_model  # NNSmith's own torch.onnx.export call
            found["export"] = "ok"
        except Exception as exc:
            found["export"] = summarize_exception(exc)
        try:
            report = BackendFactory.init("onnxruntime", target="cpu", optmax=True).make_testcase(model)
            found["backend"] = last_line(report.log) if isinstance(report, BugReport) else "ok"
        except Exception as exc:
            found["backend"] = summarize_exception(exc)
    return found


def summarize_exception(exc: Exception) -> str:
    """Type and first line; for torch.export's long reports, the summarized root exception too."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    root = re.findall(r"^<class '[\w.]*?(\w+)'>: (.*)$", text, re.MULTILINE)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:160]}" + (f" [{root[-1][0]}: {root[-1][1][:160]}]" if root else "")


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no message)"


@functools.cache
def diagnose() -> dict:
    """Why NNSmith's loop made no test (the same for every node count: asked once)."""
    return helper("--nnsmith-diagnose", timeout_s=600)


def helper(*args: str, timeout_s: float) -> dict:
    """Run this file as the NNSmith helper process and return its JSON result."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout_s, check=False,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    raise SystemExit(f"NNSmith helper {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")


# -- the rows -------------------------------------------------------------------------------------
def higen_row(setting: str, tests: int, nodes: int, seed: int) -> dict:
    from higen.modes import diff_plan, normal_plan

    plan = normal_plan("ort") if setting == "normal-ort" else diff_plan(["ort", "tvm", "ov"], "cpu")
    measured = bench(setting, plan, tests, nodes, seed)
    wall = measured["wall_s"]
    row = {"setting": f"higen {setting}", "nodes": nodes, "tests": tests, "invalid": measured["verdicts"].get("invalid", 0),
           "wall_s": wall, "tests_per_s": tests / wall,
           "gen_ms_per_test": 10 * measured["generation_busy_pct"] * wall / tests,
           "gen_pct": measured["generation_busy_pct"], "backends_pct": measured["backends_busy_pct"],
           "loop_own_pct": measured["loop_own_pct"], "verdicts": json.dumps(measured["verdicts"], sort_keys=True),
           "note": f"worker restarts {measured['worker_restarts']}"}
    for key, value in measured.items():
        if key.endswith("_ms_per_test"):
            row[f"{key[:-len('_ms_per_test')]}_pct"] = round(value * tests / wall / 10, 1)
    return row


def reference_row(nodes: int, tests: int, seed: int) -> dict:
    result = helper("--nnsmith-generate", "--nodes", str(nodes), "--tests", str(tests), "--seed", str(seed),
                    timeout_s=120 + 60 * tests)
    phases = result["phases_s"]
    wall = sum(phases.values())
    shares = ", ".join(f"{name} {100 * s / wall:.0f}%" for name, s in phases.items())
    return {"setting": REFERENCE, "nodes": nodes, "tests": tests, "invalid": result["invalid"], "wall_s": round(wall, 2),
            "tests_per_s": tests / wall, "gen_ms_per_test": 1000 * wall / tests, "gen_pct": 100.0,
            "verdicts": json.dumps({"invalid": result["invalid"], "ok": tests - result["invalid"]}),
            "note": f"{result['ops']} operators; {shares}"
                    + (f"; failures {result['failures']}" if result["failures"] else "")}


def fuzz_row(nodes: int, seed: int, seconds: int, dtypes: tuple[str, ...]) -> dict:
    """NNSmith's own loop for ``seconds``; its tests/s, or why it made none."""
    with tempfile.TemporaryDirectory(prefix="higen-nnsmith-fuzz-") as scratch:
        command = [sys.executable, "-m", "nnsmith.cli.fuzz", f"fuzz.time={seconds}s", "model.type=onnx",
                   "backend.type=onnxruntime", f"fuzz.root={scratch}/bugs", f"fuzz.seed={seed}",
                   f"mgen.max_nodes={nodes}", f"mgen.dtype_choices=[{','.join(dtypes)}]",
                   f"hydra.run.dir={scratch}/hydra"]
        env = os.environ | {"XDG_CACHE_HOME": scratch}  # its op/dtype probe runs afresh and leaves no cache behind
        with open(Path(scratch) / "stdout.txt", "w") as output:
            done = subprocess.run(command, cwd=scratch, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  timeout=seconds + 900, check=False)
        log = Path(scratch) / "hydra" / "fuzz.log"
        parsed = parse_fuzz_log(log if log.exists() else Path(scratch) / "stdout.txt")
        if done.returncode != 0:
            parsed["exit"] = f"exit status {done.returncode}: " + \
                             last_line((Path(scratch) / "stdout.txt").read_text(errors="replace")[-3000:])
    made = parsed["tests"]
    row = {"setting": FUZZ, "nodes": nodes, "tests": made, "invalid": parsed["failed"], "wall_s": seconds,
           "tests_per_s": made / seconds, "verdicts": json.dumps({"bugs": parsed["bugs"], "ok": made - parsed["bugs"]})}
    if made:
        gen, evaluation = parsed["gen_s"], parsed["eval_s"]
        row.update(gen_ms_per_test=1000 * gen / made, gen_pct=100 * gen / seconds, backends_pct=100 * evaluation / seconds,
                   loop_own_pct=100 * (seconds - gen - evaluation) / seconds,
                   note="ran" if gen else "ran; its log holds no per-test timings")
        return row
    reason = (f"0 tests in {seconds} s; {parsed['failed']} make_testcase failures"
              + (f", most often '{parsed['error']}'" if parsed["error"] else "")
              + f"; its op/dtype probe passed {parsed['probe_ok']} of {parsed['probe_ok'] + parsed['probe_failed']}"
                f" single-op models")
    if "exit" in parsed:
        reason += f"; {parsed['exit']}"
    diagnosis = diagnose()
    reason += (f". Tried on a one-op model: NNSmith's ORT backend -> {diagnosis['backend']}; "
               f"NNSmith's ONNX export (torch.onnx.export without dynamo=False) -> {diagnosis['export']}")
    row["note"] = reason
    return row


def parse_fuzz_log(path: Path) -> dict:
    """Counts from NNSmith's fuzz.log: tests made, failures, bugs, probe results, timings, commonest error."""
    found = {"tests": 0, "failed": 0, "bugs": 0, "probe_ok": 0, "probe_failed": 0, "gen_s": 0.0, "eval_s": 0.0}
    errors: Counter[str] = Counter()
    totals = {"testcases generated": "tests", "failed to make testcases": "failed", "bugs found": "bugs"}
    with open(path, errors="replace") as handle:
        for line in handle:
            if "[Success] at" in line:
                found["probe_ok"] += 1
            elif "[Failure] at" in line:
                found["probe_failed"] += 1
            elif "Timing:" in line:
                for name, ms in re.findall(r"(\w+): ([\d.]+)ms", line):
                    if name in ("gen", "eval"):
                        found[f"{name}_s"] += float(ms) / 1000
            elif " - Total " in line or "] - Total " in line:
                for text, key in totals.items():
                    match = re.search(rf"Total (\d+) {text}", line)
                    if match:
                        found[key] = int(match.group(1))
            elif re.match(r"^[A-Za-z_.]*(Error|Exception): ", line):
                errors[line.strip()[:200]] += 1
    found["error"] = errors.most_common(1)[0][0] if errors else ""
    return found


# -- output ---------------------------------------------------------------------------------------
def add_ratios(rows: list[dict]) -> None:
    references = {r["nodes"]: r for r in rows if r["setting"] == REFERENCE}
    for row in rows:
        reference = references.get(row["nodes"])
        if reference and row is not reference:
            row["x_nnsmith_gen"] = row["tests_per_s"] / reference["tests_per_s"]
            if row.get("gen_ms_per_test"):
                row["gen_x_nnsmith"] = row["gen_ms_per_test"] / reference["gen_ms_per_test"]


def plot(rows: list[dict], nodes: list[int], out: Path, title: str) -> None:
    plt = pyplot()
    figure, (speed, shares) = plt.subplots(1, 2, figsize=(14, 5))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    width = 0.8 / len(settings)
    for index, setting in enumerate(settings):
        values = [next((r["tests_per_s"] for r in rows if r["setting"] == setting and r["nodes"] == n), 0) for n in nodes]
        bars = speed.bar([i + index * width for i in range(len(nodes))], values, width, label=setting)
        speed.bar_label(bars, labels=[f"{v:.1f}" if v else "no test" for v in values], fontsize=7)
    speed.set_xticks([i + width * (len(settings) - 1) / 2 for i in range(len(nodes))], [f"{n} nodes" for n in nodes])
    speed.set_ylabel("tests/s")
    speed.set_title("throughput (NNSmith gen only: generation, no backend)", fontsize=10)
    speed.legend(fontsize=8)
    measured = [r for r in rows if r["setting"].startswith("higen")]
    parts = ["gen_pct"] + sorted({k for r in measured for k in r if k.endswith("_pct") and ":" in k}) + ["loop_own_pct"]
    width = 0.8 / len(parts)
    for index, part in enumerate(parts):
        values = [r.get(part, 0) or 0 for r in measured]
        shares.bar([i + index * width for i in range(len(measured))], values, width, label=part[:-4])
    shares.set_xticks([i + width * (len(parts) - 1) / 2 for i in range(len(measured))],
                      [f"{r['setting'][6:]}\n{r['nodes']} nodes" for r in measured], fontsize=7)
    shares.set_ylabel("% of wall time (overlapping)")
    shares.set_title("HiGen: share of wall time", fontsize=10)
    shares.legend(fontsize=7)
    save_figure(figure, out, title)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=50, help="tests per setting and node count")
    parser.add_argument("--nodes", default="5,10,20", help="comma-separated node counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default=",".join(HIGEN_SETTINGS), help="HiGen settings to measure")
    parser.add_argument("--nnsmith-fuzz-s", type=int, default=10, help="seconds of NNSmith's own loop per node count")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--nnsmith-generate", action="store_true", help=argparse.SUPPRESS)  # helper process modes
    parser.add_argument("--nnsmith-diagnose", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    nodes = [int(n) for n in args.nodes.split(",")]
    if args.nnsmith_generate or args.nnsmith_diagnose:
        result = nnsmith_generate(nodes[0], args.tests, args.seed) if args.nnsmith_generate else nnsmith_diagnose()
        print(MARKER + json.dumps(result))
        return 0
    settings = [s for s in args.settings.split(",") if s]
    unknown = set(settings) - set(HIGEN_SETTINGS)
    if unknown or args.tests <= 0 or args.nnsmith_fuzz_s <= 0:
        parser.error(f"settings must be among {HIGEN_SETTINGS}, --tests and --nnsmith-fuzz-s positive")
    from higen.generation.config import GenConfig

    out = console()
    load_before = machine_note()
    rows = []
    for count in nodes:
        for setting in settings:
            out.print(f"{count} nodes: HiGen {setting}, {args.tests} tests ...")
            rows.append(higen_row(setting, args.tests, count, args.seed))
        out.print(f"{count} nodes: NNSmith's own loop on ONNX Runtime, {args.nnsmith_fuzz_s} s ...")
        rows.append(fuzz_row(count, args.seed, args.nnsmith_fuzz_s, GenConfig().dtypes))
        out.print(f"{count} nodes: NNSmith's generation alone, {args.tests} tests ...")
        rows.append(reference_row(count, args.tests, args.seed))
    add_ratios(rows)
    load_after = machine_note()
    title = f"Throughput, {args.tests} tests per setting, {time.strftime('%Y-%m-%d')}, {load_after}"
    print_table(title, rows, COLUMNS, out)
    targets = sorted({k for r in rows for k in r if k.endswith("_pct") and ":" in k})
    print_table("Share of wall time per backend (%)", [r for r in rows if r["setting"].startswith("higen")],
                ["setting", "nodes", *targets], out)
    for row in rows:
        if row["setting"] in (FUZZ, REFERENCE):
            out.print(f"[bold]{row['setting']}, {row['nodes']} nodes:[/bold] {row['note']}", highlight=False)
    for row in rows:
        if "x_nnsmith_gen" in row and row["setting"].startswith("higen"):
            out.print(f"{row['setting']}, {row['nodes']} nodes: {row['x_nnsmith_gen']:.2f}x the tests/s of NNSmith's "
                      f"generation alone; its generation costs {row['gen_x_nnsmith']:.2f}x NNSmith's per test")
    out.print(f"machine: {load_before} before, {load_after} after: timings are noisy when the load exceeds the cores")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    columns = [*COLUMNS, *targets, "verdicts", "note"]
    for row in rows:
        row.update({k: round(v, 3) for k, v in row.items() if isinstance(v, float) and math.isfinite(v)})
    out.print(f"CSV: {write_csv(args.out_dir / 'throughput.csv', rows, columns)}")
    plot(rows, nodes, args.out_dir / "throughput.png", title)
    out.print(f"PNG: {args.out_dir / 'throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
