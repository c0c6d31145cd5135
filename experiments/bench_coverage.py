"""Per-test cost of each coverage collector (target: <= 20 ms per test for the per-test signals).

    python experiments/bench_coverage.py --models 30 --gcov-files 540 --gcov-functions 30 --gcov-tests 100

Wheel collectors (ort_transformers, ov_layers, ov_passes, tvm_py): NNSmith models (``--nodes``
nodes) are compiled and run once each in a fresh process whose stdout/stderr are a log file, as in a
HiGen worker, first without coverage, then with the collector. Reported per test (medians):
``plain_ms`` (compile+run), ``with_ms`` (compile+run with the collector on), ``collect_ms`` (the
collector's own begin+end work) and ``overhead_ms`` = with - plain (includes slower compilation:
ORT's INFO logging, coverage.py's tracer, OpenVINO's pass profiler). The machine is shared, so
differences below a few ms are noise.

gcov: a synthetic instrumented library of ``--gcov-files`` objects (TVM has ~540) with
``--gcov-functions`` functions each, built with g++ --coverage; each test calls a random third of the
objects. Reported: ``attach_ms`` (a worker's start: load every object's branch map, parsing the
.gcno files not in the cache, and locate the live counters), ``first_ms`` (the first collection, of
what start-up ran), the same two after a worker restart (``restart_*``, maps cached),
``collect_ms`` median and p90 per test (read the live counters, compare, branch product),
``collect_late_ms`` (median over the second half of the tests, when fewer branches are new),
``dump_ms`` (libgcov's dump+reset: writing the .gcda files for gcovr, every ``--cov-every`` tests)
and ``gcovr_s`` (one gcovr run).

gcov on a real instrumented TVM (``--tvm-cov-src/--tvm-cov-build``, the build of
``experiments/build_instrumented_tvm.sh``; the inner processes run under ``--tvm-cov-python``, the
build's virtualenv): the same figures per NNSmith model through HiGen's TVM backend (tvm:llvm:O3),
plus ``plain_ms``/``instrumented_ms``, compile+run of the same models on the apache-tvm wheel and on
the instrumented build without collection.

    python experiments/bench_coverage.py --skip wheels,gcov,gcovr --tvm-cov-src ~/.cache/higen/tvm-src \
        --tvm-cov-build ~/.cache/higen/tvm-cov-build --out experiments/results/bench_coverage_tvm.json

structure: the parent's union update per test, always on (the cost of coverage "off").
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

FAMILIES = {"ort_transformers": "ort:cpu:O3", "ov_layers": "ov:CPU", "ov_passes": "ov:CPU", "tvm_py": "tvm:llvm:O3"}


def generate_models(directory: Path, count: int, nodes: int, seed: int) -> list[dict]:
    from higen.generation.client import Generator
    from higen.generation.config import GenConfig

    generator = Generator(directory / "logs")
    generator.start()
    models = []
    try:
        attempt = 0
        while len(models) < count and attempt < count * 4:
            out = directory / f"m{attempt}"
            result = generator.generate(GenConfig(max_nodes=nodes, seed=seed + attempt), out)
            attempt += 1
            if result.valid:
                models.append({"model": str(result.test.model_path), "inputs": str(result.test.inputs_path),
                               "tokens": result.test.tokens})
    finally:
        generator.worker.stop()
    return models


# -- inner processes (stdout/stderr = a log file, like a worker) ---------------------------------------
def inner_wheel(collector: str | None, target: str, models_file: str, out_file: str) -> None:
    models = json.loads(Path(models_file).read_text())
    coverage = None
    if collector:
        from higen.coverage.worker import WorkerCoverage

        coverage = WorkerCoverage({"collectors": {collector: {}}})
    from higen.backends.base import Target
    from higen.backends.serve import create_backend
    from higen.tensors import load_tensors

    backend = create_backend(Target.parse(target))
    if coverage:
        coverage.attach(backend)
    rows = []
    for index, case in enumerate(models[:3] + models):  # three warm-ups
        request = {"model": case["model"], "coverage": True}
        began = time.perf_counter()
        collect = 0.0
        if coverage:
            coverage.begin(request)
            collect += time.perf_counter() - began
        compiled = None
        try:
            compiled = backend.compile(case["model"])
            backend.run(compiled, load_tensors(case["inputs"]))
            status = "ok"
        except Exception as error:  # noqa: BLE001 - unsupported models still cost a compile
            status = type(error).__name__
        ended = time.perf_counter()
        features = 0
        if coverage:
            payload = coverage.end(request, compiled)
            collect += time.perf_counter() - ended
            features = payload["hit"].get(collector, 0)
        if index >= 3:
            rows.append({"ms": 1000 * (time.perf_counter() - began), "collect_ms": 1000 * collect,
                         "status": status, "hit": features})
    Path(out_file).write_text(json.dumps(rows))


def measure_gcov(collector, backend, tests: Iterable[Callable[[], object]], prefix: str) -> dict:
    """A worker's gcov figures: attach (load maps, locate counters), the first collection, one
    collection after each of ``tests`` (run in order), then ten writes of the .gcda files."""
    began = time.perf_counter()
    collector.attach(backend)
    attached = time.perf_counter()
    collector.take_baseline()
    result = {"attach_ms": 1000 * (attached - began), "first_ms": 1000 * (time.perf_counter() - attached)}
    times, hits, new = [], [], []
    for run_test in tests:
        run_test()
        began = time.perf_counter()
        found = collector.end()
        times.append(1000 * (time.perf_counter() - began))
        hits.append(collector.hit_last)
        new.append(len(found))
    dumps = []
    for _ in range(10):
        began = time.perf_counter()
        collector.flush()
        dumps.append(1000 * (time.perf_counter() - began))
    objects = [o for o in collector.objects.values() if o]
    result.update(collect=times, hit=hits, new=new, dump_ms=statistics.median(dumps), objects=len(objects),
                  counters=sum(o.n_counters for o in objects), branches=sum(o.n_branches for o in objects),
                  gcda_bytes=gcda_bytes(prefix), problems=collector.problems[:5])
    return result


def inner_gcov(src: str, build: str, library: str, tests: int, out_file: str, prefix: str) -> None:
    import ctypes

    from higen.coverage.gcov import GcovCollector

    lib = ctypes.CDLL(library)
    runs = sorted(name for name in os.listdir(os.path.join(src)) if name.startswith("unit"))
    entry = [getattr(lib, f"run_{k}") for k in range(len(runs))]
    rng = random.Random(0)

    def one_test() -> None:  # a random third of the objects
        for call in rng.sample(entry, max(1, len(entry) // 3)):
            call(rng.randrange(1 << 16))

    collector = GcovCollector("gcov_bench", src, build, prefix)
    Path(out_file).write_text(json.dumps(measure_gcov(collector, None, [one_test] * tests, prefix)))


def inner_tvm_gcov(src: str, build: str, models_file: str, out_file: str, prefix: str) -> None:
    from higen.backends.base import Target
    from higen.backends.tvm import TvmBackend
    from higen.coverage.gcov import GcovCollector
    from higen.tensors import load_tensors

    models = json.loads(Path(models_file).read_text())
    backend = TvmBackend(Target.parse("tvm:llvm:O3"))

    def compile_and_run(case: dict) -> None:
        try:
            backend.run(backend.compile(case["model"]), load_tensors(case["inputs"]))
        except Exception:  # noqa: BLE001 - an unsupported model still covers its compile attempt
            pass

    collector = GcovCollector("gcov_tvm", src, build, prefix)
    tests = [functools.partial(compile_and_run, case) for case in models]
    Path(out_file).write_text(json.dumps(measure_gcov(collector, backend, tests, prefix)))


def gcda_bytes(prefix: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(prefix) for f in files if f.endswith(".gcda"))


def run_inner(args: list[str], log: Path, python: str = sys.executable) -> None:
    with open(log, "ab") as handle:
        subprocess.run([python, __file__, "--inner", *args], stdout=handle, stderr=handle, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1"})


# -- driver ------------------------------------------------------------------------------------------
def bench_wheels(models: list[dict], work: Path, families: list[str]) -> list[dict]:
    models_file = work / "models.json"
    models_file.write_text(json.dumps(models))
    rows, plain_cache = [], {}
    for family in families:
        target = FAMILIES[family]
        if target not in plain_cache:
            out = work / f"plain_{target.replace(':', '_')}.json"
            run_inner(["wheel", "", target, str(models_file), str(out)], work / "inner.log")
            plain_cache[target] = json.loads(out.read_text())
        out = work / f"cov_{family}.json"
        run_inner(["wheel", family, target, str(models_file), str(out)], work / "inner.log")
        plain, cov = plain_cache[target], json.loads(out.read_text())
        plain_ms = statistics.median(r["ms"] for r in plain)
        with_ms = statistics.median(r["ms"] for r in cov)
        rows.append({"collector": family, "target": target, "tests": len(cov),
                     "plain_ms": round(plain_ms, 2), "with_ms": round(with_ms, 2),
                     "overhead_ms": round(with_ms - plain_ms, 2),
                     "collect_ms": round(statistics.median(r["collect_ms"] for r in cov), 3),
                     "collect_p90_ms": round(sorted(r["collect_ms"] for r in cov)[int(0.9 * (len(cov) - 1))], 3),
                     "features_per_test": round(statistics.mean(r["hit"] for r in cov), 1)})
    return rows


def bench_gcov(work: Path, files: int, functions: int, tests: int) -> dict:
    from higen.coverage.gcovr import GcovrSampler
    from higen.coverage.native import build_library, synthetic_sources

    began = time.perf_counter()
    src, build, library = build_library(work / "lib", synthetic_sources(files, functions), jobs=os.cpu_count() or 2)
    build_s = time.perf_counter() - began
    data = work / "gcov-data"
    prefix = data / "w1"
    out = work / "gcov.json"
    run_inner(["gcov", str(src), str(build), str(library), str(tests), str(out), str(prefix)], work / "inner.log")
    first = json.loads(out.read_text())
    run_inner(["gcov", str(src), str(build), str(library), "3", str(work / "gcov2.json"), str(data / "w2")],
              work / "inner.log")
    restart = json.loads((work / "gcov2.json").read_text())
    sampler = GcovrSampler("bench", str(src), str(data))
    sampler.request(tests)
    result = sampler.poll(wait=True)
    return {"collector": "gcov", "functions": files * functions, "tests": tests, "build_s": round(build_s, 1),
            **gcov_figures(first, restart, result)}


def gcov_figures(first: dict, restart: dict, gcovr) -> dict:
    """The summary row of a gcov bench: ``first`` and ``restart`` from :func:`measure_gcov`, ``gcovr``
    a GcovrResult or None."""
    collect = sorted(first["collect"])
    return {"objects": first["objects"], "branches": first["branches"], "counters": first["counters"],
            "gcda_kib": first["gcda_bytes"] // 1024, "attach_ms": round(first["attach_ms"], 1),
            "first_ms": round(first["first_ms"], 1), "restart_attach_ms": round(restart["attach_ms"], 1),
            "restart_first_ms": round(restart["first_ms"], 1),
            "collect_ms": round(statistics.median(collect), 2), "collect_p90_ms": round(collect[int(0.9 * (len(collect) - 1))], 2),
            "collect_late_ms": round(statistics.median(first["collect"][len(first["collect"]) // 2:]), 2),
            "dump_ms": round(first["dump_ms"], 2), "branches_hit_per_test": round(statistics.mean(first["hit"]), 1),
            "gcovr_s": round(gcovr.seconds, 2) if gcovr else None,
            "gcovr_branch_covered": (gcovr.totals or {}).get("branch_covered") if gcovr else None,
            "gcovr_error": gcovr.error[-300:] if gcovr else "", "problems": first["problems"]}


def bench_tvm_gcov(models: list[dict], work: Path, src: Path, build: Path, python: str, gcovr: bool) -> dict:
    """gcov on the real instrumented TVM; compile+run on the wheel vs the instrumented build; with
    ``gcovr``, one gcovr run on the data (tens of minutes on the full build)."""
    from higen.coverage.gcovr import GcovrSampler

    models_file = work / "models.json"
    models_file.write_text(json.dumps(models))
    timings = {}
    for label, interpreter in (("plain", sys.executable), ("instrumented", python)):
        out = work / f"tvm_{label}.json"
        run_inner(["wheel", "", "tvm:llvm:O3", str(models_file), str(out)], work / "inner.log", interpreter)
        timings[label] = statistics.median(r["ms"] for r in json.loads(out.read_text()))
    data = work / "tvm-gcov-data"
    out = work / "tvm_gcov.json"
    run_inner(["tvm-gcov", str(src), str(build), str(models_file), str(out), str(data / "w1")], work / "inner.log", python)
    first = json.loads(out.read_text())
    (work / "models3.json").write_text(json.dumps(models[:3]))
    run_inner(["tvm-gcov", str(src), str(build), str(work / "models3.json"), str(work / "tvm_gcov2.json"),
               str(data / "w2")], work / "inner.log", python)
    restart = json.loads((work / "tvm_gcov2.json").read_text())
    result = None
    if gcovr:
        sampler = GcovrSampler("bench", str(src), str(data))
        sampler.request(len(models))
        result = sampler.poll(wait=True)
    return {"collector": "gcov_tvm", "tests": len(models), "plain_ms": round(timings["plain"], 1),
            "instrumented_ms": round(timings["instrumented"], 1), **gcov_figures(first, restart, result)}


def bench_structure(models: list[dict]) -> dict:
    from higen.coverage.manager import CoverageManager

    manager = CoverageManager(None, None, ["ort:cpu:O3"])
    times = []
    for _ in range(20):
        for case in models:
            began = time.perf_counter()
            manager.observe(0, case["tokens"], {})
            times.append(1000 * (time.perf_counter() - began))
    return {"collector": "structure", "tests": len(times), "collect_ms": round(statistics.median(times), 4),
            "collect_p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 4)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        kind, *rest = sys.argv[2:]
        if kind == "wheel":
            inner_wheel(rest[0] or None, rest[1], rest[2], rest[3])
        elif kind == "tvm-gcov":
            inner_tvm_gcov(*rest)
        else:
            inner_gcov(rest[0], rest[1], rest[2], int(rest[3]), rest[4], rest[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--gcov-files", type=int, default=540)
    parser.add_argument("--gcov-functions", type=int, default=30)
    parser.add_argument("--gcov-tests", type=int, default=100)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: wheels,gcov,gcovr (gcovr: on the "
                        "real TVM build only)")
    parser.add_argument("--tvm-cov-src", type=Path, help="an instrumented TVM's source tree: also measure gcov on it")
    parser.add_argument("--tvm-cov-build", type=Path, help="that TVM's build tree")
    parser.add_argument("--tvm-cov-python", default=str(Path.home() / ".cache/higen/tvm-cov-venv/bin/python"),
                        help="the Python whose `import tvm` is that build")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/bench_coverage.json"))
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results = []
    with tempfile.TemporaryDirectory(prefix="higen-bench-cov-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        work = Path(tmp)
        wheels = "wheels" not in skip
        models = generate_models(work / "models", args.models, args.nodes, args.seed) \
            if wheels or args.tvm_cov_build else []
        if wheels:
            results.append(bench_structure(models))
            results.extend(bench_wheels(models, work, [f for f in args.families.split(",") if f]))
        if args.tvm_cov_build:
            results.append(bench_tvm_gcov(models, work, args.tvm_cov_src, args.tvm_cov_build, args.tvm_cov_python,
                                          "gcovr" not in skip))
        if "gcov" not in skip:
            results.append(bench_gcov(work, args.gcov_files, args.gcov_functions, args.gcov_tests))
    for row in results:
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1, default=str) + "\n")
    with open(args.out.with_suffix(".csv"), "w", newline="") as handle:
        columns = list(dict.fromkeys(k for row in results for k in row if k != "problems"))
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
