"""The gcov collector on a real instrumented library (built here with g++ --coverage), in a worker
process, checked test by test against gcov's own JSON branch report and against gcovr's totals."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from higen.coverage.gcov_data import branches_of, parse_gcno
from higen.coverage.manager import CoverageManager, CoverageSettings, GcovBuild
from higen.coverage.native import build_library
from higen.workers import WorkerProcess, WorkerSpec

pytestmark = pytest.mark.skipif(not (shutil.which("g++") and shutil.which("gcov") and shutil.which("gcovr")),
                                reason="needs g++, gcov and gcovr")

TESTS = [  # (calls of one test)
    [["classify", 5]],
    [["classify", -3], ["other", 4]],
    [["classify", 150]],
    [["maythrow", 7]],
    [["classify", 5], ["other", 4]],  # nothing new
    [["classify", 0], ["maythrow", 1]],
    [["classify", 2], ["classify", 11]],
    [["classify", 60], ["other", 0]],
    [["classify", 101], ["rarely", 3]],
    [["classify", 3]],
]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return build_library(tmp_path_factory.mktemp("native"))


def gcov_counts(prefix: Path, src: Path, scratch: Path) -> dict[str, int]:
    """Branch key -> count, as ``gcov -b --json-format`` reports the .gcda files under a worker's
    GCOV_PREFIX directory (sources below ``src`` only)."""
    counts: dict[str, int] = {}
    root = os.path.realpath(src) + os.sep
    for gcda in prefix.rglob("*.gcda"):
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        shutil.copy(gcda, scratch / gcda.name)
        (scratch / (gcda.stem + ".gcno")).symlink_to(str(gcda)[len(str(prefix)):][: -len(".gcda")] + ".gcno")
        out = subprocess.run(["gcov", "-b", "--json-format", "--stdout", gcda.name], cwd=scratch,
                             capture_output=True, text=True, check=True).stdout
        for document in map(json.loads, out.splitlines()):
            for entry in document["files"]:
                path = os.path.normpath(os.path.join(document["current_working_directory"], entry["file"]))
                if not path.startswith(root):
                    continue
                for line in entry["lines"]:
                    for index, branch in enumerate(line["branches"]):
                        key = f"{path[len(root):]}:{line['line_number']}:{line.get('function_name') or ''}:{index}"
                        counts[key] = counts.get(key, 0) + branch["count"]
    return counts


def gcov_report(prefix: Path, src: Path, scratch: Path) -> tuple[set[str], set[str]]:
    """(taken, all) branch keys of gcov's report."""
    counts = gcov_counts(prefix, src, scratch)
    return {k for k, v in counts.items() if v > 0}, set(counts)


def start_worker(manager: CoverageManager, library_path: Path, logs: Path) -> WorkerProcess:
    env = manager.worker_env()["lib:w"]
    worker = WorkerProcess(WorkerSpec(name="lib:w", module="higen.coverage.native", args=(str(library_path),),
                                      env=env, start_timeout_s=60), logs)
    worker.start()
    return worker


def run_test(worker: WorkerProcess, manager: CoverageManager, step: int, calls) -> tuple[dict, dict]:
    reply = worker.call({"calls": calls, "coverage": True}, 30)
    payload = reply["coverage"]
    assert not payload.get("errors"), payload.get("errors")
    new = manager.observe(step, [], {"lib:w": SimpleNamespace(extra={"coverage": payload})})
    return new, payload


def test_per_test_novelty_and_gcovr_totals_agree_with_gcov(library, tmp_path):
    src, build, lib = library
    settings = CoverageSettings(gcov={"lib": GcovBuild(str(src), str(build))}, every=4,
                                data_dir=str(tmp_path / "data"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    manager = CoverageManager(settings, run_dir, ["lib:w"])
    worker = start_worker(manager, lib, tmp_path / "logs")
    prefix = tmp_path / "data" / "lib" / "lib_w"
    try:
        # An unmeasured request (like the op-support probe) is baseline: in the union, never novelty.
        worker.call({"calls": [["rarely", 12345]]}, 30)
        previous: set[str] = set()
        novelty = []
        for step, calls in enumerate(TESTS, start=1):
            new, payload = run_test(worker, manager, step, calls)
            worker.call({"coverage_flush": True}, 30)  # the .gcda files now hold every test so far
            taken, every = gcov_report(prefix, src, tmp_path / "gcov")
            assert manager.union["gcov_lib"] == taken, f"test {step}: union differs from gcov's report"
            if step == 1:
                baseline = set(payload["baseline"]["gcov_lib"])
                assert any(k.startswith("other.cpp:4:rarely") for k in baseline)  # the x == 12345 branch
                assert new["gcov_lib"] == len(taken - baseline) > 0
            else:
                assert new["gcov_lib"] == len(taken - previous), f"test {step}"
            novelty.append(new["gcov_lib"])
            previous = taken
        assert novelty[4] == 0 and sum(novelty) > 20 and len(every) > len(taken)  # repeats add nothing
    finally:
        worker.stop()
        manager.close()
    # gcovr (background every 4 tests, and a final sample) agrees with the union and gcov's count.
    rows = list(csv.DictReader(open(run_dir / "coverage_by_steps.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, len(TESTS) + 1))
    for row in rows:
        sampled = int(row["step"]) in (4, 8, len(TESTS))
        assert (row["gcov_lib_total"] != "") == sampled
        if sampled:
            assert int(row["gcovr_lib_branch_covered"]) == int(row["gcov_lib_covered"])
            assert int(row["gcov_lib_total"]) == len(every)
    summary = json.loads((run_dir / "gcovr_lib_summary.json").read_text())
    assert summary["branch_covered"] == len(taken) and summary["branch_total"] == len(every)


def test_gcda_files_are_written_every_n_tests_and_when_the_campaign_ends(library, tmp_path):
    """Counters are read from memory per test; libgcov writes the .gcda files (what gcovr totals)
    every ``every`` tests and on the manager's flush before the workers stop."""
    src, build, lib = library
    settings = CoverageSettings(gcov={"lib": GcovBuild(str(src), str(build))}, every=3,
                                data_dir=str(tmp_path / "data"), final_sample=False)
    manager = CoverageManager(settings, None, ["lib:w"])
    worker = start_worker(manager, lib, tmp_path / "logs")
    prefix = tmp_path / "data" / "lib" / "lib_w"
    written = []
    try:
        for step, calls in enumerate(TESTS[:5], start=1):
            run_test(worker, manager, step, calls)
            written.append(gcov_report(prefix, src, tmp_path / "gcov")[0])
            if step == 3:
                union_at_dump = set(manager.union["gcov_lib"])
        assert written[0] == written[1] == set() and written[2] == written[3] == union_at_dump
        assert union_at_dump < manager.union["gcov_lib"]  # test 5 found more, not written yet
        manager.flush(SimpleNamespace(workers={"lib:w": worker}))
        assert gcov_report(prefix, src, tmp_path / "gcov")[0] == manager.union["gcov_lib"]
    finally:
        worker.stop()
        manager.close()


def test_reset_drops_what_ran_before_the_first_test(library, tmp_path):
    src, build, lib = library
    settings = CoverageSettings(gcov={"lib": GcovBuild(str(src), str(build))}, every=0, reset=True,
                                data_dir=str(tmp_path / "data"))
    manager = CoverageManager(settings, tmp_path, ["lib:w"])
    worker = start_worker(manager, lib, tmp_path / "logs")
    try:
        worker.call({"calls": [["rarely", 12345]]}, 30)  # unmeasured, then dropped by the reset
        new, payload = run_test(worker, manager, 1, [["classify", 5]])
        assert "baseline" not in payload
        assert not any(k.startswith("other.cpp") for k in manager.union["gcov_lib"])
        worker.call({"coverage_flush": True}, 30)
        taken, _ = gcov_report(tmp_path / "data" / "lib" / "lib_w", src, tmp_path / "gcov")
        assert taken == manager.union["gcov_lib"] and new["gcov_lib"] == len(taken)
        # Counters are zeroed after every test: the same test again adds nothing and hits the same.
        hit_first = payload["hit"]["gcov_lib"]
        new, payload = run_test(worker, manager, 2, [["classify", 5]])
        assert new["gcov_lib"] == 0 and payload["hit"]["gcov_lib"] == hit_first
    finally:
        worker.stop()
        manager.close()
    summary = json.loads((tmp_path / "gcovr_lib_summary.json").read_text())
    assert summary["branch_covered"] == len(manager.union["gcov_lib"])


def test_library_loaded_after_start_is_dumped_too(library, tmp_path):
    """Each instrumented library has its own libgcov: one loaded later (a plugin) must be found."""
    src, build, lib = library
    plugin_src, _, plugin = build_library(tmp_path, {"plugin.cpp": 'extern "C" int plug(int x) { return x > 2 ? 1 : 0; }\n'},
                                          name="libplugin.so")
    settings = CoverageSettings(gcov={"lib": GcovBuild(str(plugin_src), str(tmp_path / "build"))}, every=0,
                                data_dir=str(tmp_path / "data"), final_sample=False)
    manager = CoverageManager(settings, None, ["lib:w"])
    worker = start_worker(manager, lib, tmp_path / "logs")
    try:
        run_test(worker, manager, 1, [["classify", 5]])
        reply = worker.call({"load": [str(plugin)], "calls": [["plug", 3]], "coverage": True}, 30)
        features = reply["coverage"]["features"]["gcov_lib"]  # x > 2 taken (not x <= 2)
        assert len(features) == 1 and features[0].startswith("plugin.cpp:1:plug:")
    finally:
        worker.stop()
        manager.close()


def test_an_unreadable_object_is_reported_and_the_rest_still_counted(tmp_path):
    """A .gcno that cannot be read (here cut short) costs that object's branches, reported in the
    request's coverage errors (the parent's coverage_errors.json); the other objects still count."""
    sources = {"a.cpp": 'extern "C" int classify(int x) { return x > 2 ? 1 : 0; }\n',
               "b.cpp": 'extern "C" int other(int x) { return x < 0 ? 1 : 0; }\n'}
    src, build, lib = build_library(tmp_path, sources)
    broken = build / "b.gcno"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    manager = CoverageManager(CoverageSettings(gcov={"lib": GcovBuild(str(src), str(build))}, every=0,
                                               data_dir=str(tmp_path / "data"), final_sample=False), None, ["lib:w"])
    worker = start_worker(manager, lib, tmp_path / "logs")
    try:
        payload = worker.call({"calls": [["classify", 5], ["other", -1]], "coverage": True}, 30)["coverage"]
        assert "problem(s), the first: " in payload["errors"]["gcov_lib"] and "/b.gc" in payload["errors"]["gcov_lib"]
        assert {k.split(":")[0] for k in payload["features"]["gcov_lib"]} == {"a.cpp"}
        again = worker.call({"calls": [["classify", 1]], "coverage": True}, 30)["coverage"]
        assert not again.get("errors")  # reported once
    finally:
        worker.stop()
        manager.close()


def test_branch_maps_are_parsed_once_per_build(library, tmp_path, monkeypatch):
    """Before the workers start, every .gcno of the build is parsed into HiGen's cache, with
    progress; a second campaign on the same build parses nothing."""
    from higen.coverage.gcov import warm_branch_maps

    src, build, _ = library
    monkeypatch.setenv("HIGEN_CACHE_DIR", str(tmp_path / "cache"))
    progress = []
    assert warm_branch_maps(str(src), str(build), workers=2, progress=lambda *done: progress.append(done)) == []
    notes = list(Path(build).rglob("*.gcno"))
    cached = {path: path.stat().st_mtime_ns for path in (tmp_path / "cache" / "gcno").glob("*.npz")}
    assert len(cached) == len(notes) > 1 and progress[-1] == (len(notes), len(notes))
    assert warm_branch_maps(str(src), str(build)) == []
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "cache" / "gcno").glob("*.npz")} == cached


def test_branch_map_matches_gcov_on_every_branch_count(library, tmp_path):
    """Direct check of the .gcno/.gcda reader: every branch's count equals gcov's, taken or not."""
    import numpy as np

    from higen.coverage.gcov_data import counter_values, gcda_layout

    src, build, lib = library
    prefix = tmp_path / "prefix"
    script = (f"import ctypes, os; os.environ['GCOV_PREFIX'] = {str(prefix)!r}; l = ctypes.CDLL({str(lib)!r});"
              "[l.classify(v) or l.other(v) or l.maythrow(v) for v in (5, -3, 150, 0, 7, 60)]")
    subprocess.run(["python", "-c", script], check=True)  # libgcov dumps at exit
    root = os.path.realpath(src) + os.sep
    mine: dict[str, int] = {}
    for gcda in prefix.rglob("*.gcda"):
        notes = parse_gcno(str(gcda)[len(str(prefix)):][: -len(".gcda")] + ".gcno")
        branches, counters = branches_of(notes, lambda s: s.startswith(root))
        data = gcda.read_bytes()
        word_to_counter, _ = gcda_layout(data, counters)
        low = np.flatnonzero(word_to_counter >= 0)[::2]
        values = np.zeros(sum(n for _, n in counters.values()), dtype=np.int64)
        values[word_to_counter[low]] = counter_values(np.frombuffer(data, "<u4"), low).astype(np.int64)
        for b in branches:
            key = f"{b.source[len(root):]}:{b.line}:{b.function}:{b.index}"
            mine[key] = mine.get(key, 0) + int(sum(values[c] * k for c, k in b.terms.items()))
    assert mine == gcov_counts(prefix, src, tmp_path / "gcov") and len(mine) > 40
