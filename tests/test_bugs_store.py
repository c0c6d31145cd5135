"""The bug store: case layout and meta.json, deduplication across sessions of one run root (after a
restart too), concurrent writers, a corrupt signature index. Real engine, real runtimes; the
``fault:segfault`` target only injects a crash."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import onnx

from higen.backends.base import Target
from higen.backends.pool import BackendPool
from higen.bugs.case import FORMAT_VERSION, load_case
from higen.bugs.store import BugStore, SignatureIndex
from higen.engine import Engine, EngineSettings
from higen.generation.config import GenConfig
from higen.modes import Plan
from higen.oracle import judge
from higen.run_dir import create_run_dir
from higen.tensors import load_tensors, save_tensors
from higen.testcase import TestCase as GeneratedTest
from test_bugs_common import RELU_CLIP_PAIRS, RELU_CLIP_TARGETS, relu_clip_chain, save_case

SEGV = "crash|fault:segfault|run|SIGSEGV|"


def session(run_root: Path, tests: int, examples: int = 1) -> list:
    """One campaign session on ``run_root``: a fresh engine (a restart), ``tests`` ReLU-only tests."""
    plan = Plan("diff", [Target.parse("ort:cpu:O3"), Target.parse("fault:segfault")],
                [("torch:cpu", "ort:cpu:O3"), ("torch:cpu", "fault:segfault")])
    settings = EngineSettings(plan=plan, timeout_s=20, learn_support=False, examples_per_signature=examples)
    with Engine(settings, create_run_dir(run_root)) as engine:
        engine.start()
        return [engine.run_one(GenConfig(seed=seed, ops=("core.ReLU",), dtypes=("float32",), max_nodes=3))
                for seed in range(tests)]


def test_dedup_across_sessions_survives_a_restart(tmp_path):
    root = tmp_path / "runs"
    first = session(root, tests=2)
    assert [r.new_signatures for r in first] == [[SEGV], []]
    assert first[0].case and first[1].case is None
    second = session(root, tests=2)  # a new process state: only the files remember
    assert all(r.findings and not r.new_signatures and r.case is None for r in second)

    shared = json.loads((root / "signatures.json").read_text())
    assert set(shared) == {SEGV}
    assert shared[SEGV]["count"] == 4
    assert shared[SEGV]["cases"] == [f"1/bug_cases/{first[0].case}"]  # relative to the run root
    assert not [p for p in (root / "2" / "bug_cases").iterdir() if p.is_dir()]
    assert json.loads((root / "2" / "bug_cases" / "index.json").read_text())[SEGV]["count"] == 2

    case = load_case(root / shared[SEGV]["cases"][0])
    meta = case.meta
    assert meta["format_version"] == FORMAT_VERSION and meta["signature"] == SEGV
    assert meta["versions"]["higen"] and meta["versions"]["nnsmith"] == "0.1.0" and meta["versions"]["torch"]
    assert meta["versions"]["targets"]["ort:cpu:O3"]["runtime"] == "onnxruntime"
    assert GenConfig.from_json(meta["config"]).seed == meta["seed"] == 0
    assert meta["targets"] == ["ort:cpu:O3", "fault:segfault"] and meta["verdict"] == "crash"
    assert meta["outcomes"]["fault:segfault"]["signal"] == "SIGSEGV"
    assert meta["outcomes"]["ort:cpu:O3"]["status"] == "ok" and meta["timings"]["ort:cpu:O3"]["compile_s"] > 0
    assert meta["oracle"]["pairs"] == [["torch:cpu", "ort:cpu:O3"], ["torch:cpu", "fault:segfault"]]
    assert {"model.onnx", "inputs.npz", "outputs/torch_cpu.npz", "error.log", "repro.py"} <= set(meta["files"])

    third = session(root, tests=2, examples=2)  # a larger quota keeps one more example, then counts
    assert [bool(r.case) for r in third] == [True, False]
    shared = json.loads((root / "signatures.json").read_text())
    assert shared[SEGV]["count"] == 6 and len(shared[SEGV]["cases"]) == 2


def _record_many(args) -> list[str | None]:
    root, test_dir, judgement, outcomes, times = args
    store = BugStore(Path(root) / "bug_cases", examples_per_signature=3, run_root=Path(root))
    test = GeneratedTest(GenConfig(), Path(test_dir))
    return [store.record(test, judgement, outcomes, {}).case for _ in range(times)]


def test_concurrent_writers_share_one_index(tmp_path):
    """Four processes recording the same real ONNX Runtime failure at once: every sighting is
    counted, exactly ``examples_per_signature`` cases are kept, no staging folder is left behind."""
    model, inputs = relu_clip_chain()
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    onnx.save(model, test_dir / "model.onnx")
    save_tensors(test_dir / "inputs.npz", inputs)
    save_tensors(test_dir / "reference.npz", {"a8": np.zeros((3, 4))})
    with BackendPool([Target.parse(t) for t in RELU_CLIP_TARGETS], tmp_path / "logs") as pool:
        outcomes = pool.run(test_dir / "model.onnx", test_dir / "inputs.npz", test_dir)
    outputs = {"ort:cpu:O0": load_tensors(outcomes["ort:cpu:O0"].outputs_path)}
    judgement = judge(outcomes, outputs, RELU_CLIP_PAIRS, {})
    (signature,) = [f.signature for f in judgement.findings]
    assert "FuseReluClip" in signature

    root = tmp_path / "root"
    with multiprocessing.get_context("fork").Pool(4) as workers:
        saved = workers.map(_record_many, [(root, test_dir, judgement, outcomes, 5)] * 4)
    names = [name for batch in saved for name in batch if name]
    assert len(names) == 3 and len(set(names)) == 3
    index = SignatureIndex(root).load()
    assert index[signature]["count"] == 20
    assert sorted(index[signature]["cases"]) == sorted(f"bug_cases/{n}" for n in names)
    assert sorted(p.name for p in (root / "bug_cases").iterdir()) == sorted([*names, "index.json"])


def test_corrupt_index_is_rebuilt_from_the_cases(tmp_path, caplog):
    model, inputs = relu_clip_chain()
    run = tmp_path / "run"
    case = save_case(run, model, inputs, RELU_CLIP_TARGETS, RELU_CLIP_PAIRS)
    signature = json.loads((case / "meta.json").read_text())["signature"]
    (run / "signatures.json").write_text('{"half-written": ')
    again = save_case(run, model, inputs, RELU_CLIP_TARGETS, RELU_CLIP_PAIRS, examples_per_signature=2)
    assert again != case and "corrupt" in caplog.text
    index = json.loads((run / "signatures.json").read_text())
    assert index[signature]["count"] == 2  # one rebuilt from the saved case, one new sighting
    assert index[signature]["cases"] == [f"bug_cases/{case.name}", f"bug_cases/{again.name}"]
    assert len(list(run.glob("signatures.json.corrupt-*"))) == 1
    # A case deleted by hand no longer fills the quota: the next sighting is saved again.
    shutil.rmtree(again)
    third = save_case(run, model, inputs, RELU_CLIP_TARGETS, RELU_CLIP_PAIRS, examples_per_signature=2)
    assert json.loads((run / "signatures.json").read_text())[signature]["cases"][-1] == f"bug_cases/{third.name}"
