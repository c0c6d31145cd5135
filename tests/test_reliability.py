"""Reliability against real failures: crashing, hanging and memory-hungry backends, large tensors,
a whole engine that keeps going through faults, and atomic / pickle-free tensor files.

Everything runs the real components. Misbehaviour comes only from the ``fault:*`` targets of
``higen.backends.faults`` (real SIGSEGV, SIGABRT, hang, memory growth, wrong numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from conftest import float_input, make_model
from higen.backends.base import Target
from higen.backends.pool import BackendPool
from higen.engine import Engine, EngineSettings
from higen.generation.config import GenConfig
from higen.modes import Plan
from higen.oracle import Verdict
from higen.tensors import load_tensors, save_tensors

FAULT_TIMEOUT_S = 3.0
FAULT_MEMORY_MB = 1024


def targets(*names: str) -> list[Target]:
    return [Target.parse(name) for name in names]


# -- every kind of fault, through one real pool ---------------------------------------------------
def test_pool_survives_every_fault_and_keeps_serving(relu_add_case, tmp_path):
    model_path, inputs_path = relu_add_case
    inputs = load_tensors(inputs_path)
    expected = np.maximum(inputs["a"] + inputs["b"], 0)
    # fault:oom before fault:hang: the pool collects in order and checks a worker's memory only while
    # it waits for that worker (see test_memory_cap_is_enforced_while_another_worker_is_awaited).
    names = ["ort:cpu:O3", "fault:segfault", "fault:abort", "fault:oom", "fault:hang", "fault:garbage"]
    faulty = ["fault:segfault", "fault:abort", "fault:oom", "fault:hang"]
    # the growing worker must meet its memory cap, not its deadline, however slowly a loaded machine
    # hands out memory
    with BackendPool(targets(*names), tmp_path / "logs", timeout_s=FAULT_TIMEOUT_S, memory_limit_mb=FAULT_MEMORY_MB,
                     timeouts_by_target={"fault:oom": 300}) as pool:
        ort_pid = pool.workers["ort:cpu:O3"].proc.pid
        garbage_pid = pool.workers["fault:garbage"].proc.pid
        for round_ in (1, 2, 3):
            out_dir = tmp_path / f"round{round_}"
            out_dir.mkdir()
            outcomes = pool.run(model_path, inputs_path, out_dir)
            assert set(outcomes) == set(names)

            segv, abrt = outcomes["fault:segfault"], outcomes["fault:abort"]
            assert (segv.status, segv.signal, segv.error_type, segv.stage) == ("crash", "SIGSEGV", "crash", "run")
            assert (abrt.status, abrt.signal, abrt.error_type, abrt.stage) == ("crash", "SIGABRT", "crash", "run")
            assert "SIGSEGV" in segv.message and "SIGABRT" in abrt.message

            hang = outcomes["fault:hang"]
            assert (hang.status, hang.error_type, hang.signal) == ("timeout", "timeout", None)
            assert hang.wall_s >= FAULT_TIMEOUT_S - 0.1  # a timeout never comes early

            oom = outcomes["fault:oom"]
            assert (oom.status, oom.error_type, oom.signal) == ("crash", "oom", None)
            assert f"{FAULT_MEMORY_MB} MiB" in oom.message

            for name in faulty:
                assert outcomes[name].outputs_path is None
                assert pool.workers[name].restarts == round_, name
                assert not pool.workers[name].alive  # killed; restarted by the next request

            # The healthy targets are untouched: same processes, correct (or garbage) answers.
            good = outcomes["ort:cpu:O3"]
            assert good.status == "ok" and good.stage == "run"
            np.testing.assert_array_equal(load_tensors(good.outputs_path)["y"], expected)
            garbage = outcomes["fault:garbage"]
            assert garbage.status == "ok"
            produced = load_tensors(garbage.outputs_path)
            assert set(produced) == {"y"}
            assert produced["y"].shape == (2, 3) and produced["y"].dtype == np.float32
            assert not np.allclose(produced["y"], expected, atol=1.0)
            for name in ("ort:cpu:O3", "fault:garbage"):
                assert pool.workers[name].restarts == 0
            assert pool.workers["ort:cpu:O3"].proc.pid == ort_pid
            assert pool.workers["fault:garbage"].proc.pid == garbage_pid
            # Workers are watched in parallel: the crashes and answers were taken while the hang was
            # still pending, not after its timeout.
            for name in ("fault:segfault", "fault:abort", "ort:cpu:O3", "fault:garbage"):
                assert outcomes[name].wall_s < hang.wall_s, name
    assert all(worker.proc is None for worker in pool.workers.values())


def test_memory_cap_is_enforced_while_another_worker_is_awaited(relu_add_case, tmp_path):
    """The pool watches every pending worker's memory, not only the one it happens to wait for: the
    growing worker is killed at the cap while the hanging one is still pending (events in that order,
    whatever the load), and the kill names the cap."""
    model_path, inputs_path = relu_add_case
    cap_mb, timeout_s = 256, 6.0
    with BackendPool(targets("fault:hang", "fault:oom"), tmp_path / "logs", timeout_s=timeout_s,
                     memory_limit_mb=cap_mb) as pool:
        outcomes = pool.run(model_path, inputs_path, tmp_path)
        restarts = pool.workers["fault:oom"].restarts
    oom, hang = outcomes["fault:oom"], outcomes["fault:hang"]
    assert (oom.status, oom.error_type, oom.signal) == ("crash", "oom", None)
    assert f"{cap_mb} MiB" in oom.message and restarts == 1
    assert hang.status == "timeout" and oom.wall_s < hang.wall_s


def test_workers_are_recycled_after_n_answers_without_losing_a_test(relu_add_case, tmp_path):
    """A planned restart (``recycle_after``) gives a fresh process every N tests; the test after it
    waits for the fresh child and gets the same answer, and it is not counted as a failure."""
    model_path, inputs_path = relu_add_case
    inputs = load_tensors(inputs_path)
    expected = np.maximum(inputs["a"] + inputs["b"], 0)
    with BackendPool(targets("ort:cpu:O3"), tmp_path / "logs", recycle_after=2) as pool:
        worker = pool.workers["ort:cpu:O3"]
        pids = []
        for round_ in range(5):
            pids.append(worker.proc.pid)
            out_dir = tmp_path / f"round{round_}"
            out_dir.mkdir()
            outcome = pool.run(model_path, inputs_path, out_dir)["ort:cpu:O3"]
            assert outcome.status == "ok", outcome
            np.testing.assert_allclose(load_tensors(outcome.outputs_path)["y"], expected, rtol=1e-6)
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        assert (worker.recycles, worker.restarts) == (2, 0)


# -- large tensors ------------------------------------------------------------------------------
def test_large_output_round_trips_exactly(tmp_path):
    """A 24 MiB output (6 M float32) comes back bit-exact: tensors travel through files, and no pipe
    between parent and worker can fill up and deadlock."""
    rows, cols = 3072, 2048
    model = make_model([helper.make_node("Add", ["col", "row"], ["y"])],
                       [float_input("col", [rows, 1]), float_input("row", [1, cols])],
                       [float_input("y", [rows, cols])])
    onnx.save(model, tmp_path / "big.onnx")
    rng = np.random.default_rng(7)
    inputs = {"col": rng.standard_normal((rows, 1)).astype(np.float32),
              "row": rng.standard_normal((1, cols)).astype(np.float32)}
    save_tensors(tmp_path / "inputs.npz", inputs)
    expected = inputs["col"] + inputs["row"]
    assert expected.nbytes >= 16 << 20
    with BackendPool(targets("ort:cpu:O0", "ort:cpu:O3"), tmp_path / "logs", timeout_s=60) as pool:
        outcomes = pool.run(tmp_path / "big.onnx", tmp_path / "inputs.npz", tmp_path)
    for name, outcome in outcomes.items():
        assert outcome.status == "ok", (name, outcome.message)
        assert Path(outcome.outputs_path).stat().st_size >= expected.nbytes
        got = load_tensors(outcome.outputs_path)["y"]
        assert got.dtype == np.float32 and got.shape == (rows, cols)
        np.testing.assert_array_equal(got, expected)


# -- a whole engine that keeps going through faults -----------------------------------------------
SEGV_SIGNATURE = "crash|fault:segfault|run|SIGSEGV|"  # the worker announced "run" before it died
HANG_SIGNATURE = "timeout|fault:hang|run|timeout|"


def test_engine_campaign_survives_faults_and_deduplicates(tmp_path):
    plan = Plan("diff", targets("ort:cpu:O3", "fault:segfault", "fault:hang", "fault:garbage"),
                [("torch:cpu", "ort:cpu:O3"), ("torch:cpu", "fault:garbage")])
    settings = EngineSettings(plan=plan, timeout_s=FAULT_TIMEOUT_S, memory_limit_mb=4096,
                              learn_support=False, examples_per_signature=1, reduce="off")  # the case as saved
    run_dir = tmp_path / "run"
    # One operator and dtype, so every test fails with the same signatures (dedup is then visible);
    # the seeds still make four different graphs.
    configs = [GenConfig(seed=seed, ops=("core.ReLU",), dtypes=("float32",), max_nodes=3) for seed in range(4)]
    results = []
    with Engine(settings, run_dir) as engine:
        versions = engine.start()
        assert set(versions["targets"]) == {t.name for t in plan.targets}
        scratch = engine.work
        for config in configs:
            results.append(engine.run_one(config))
        assert engine.tests_done == 4
        assert dict(engine.verdicts) == {"crash": 4}
        restarts = {name: worker.restarts for name, worker in engine.pool.workers.items()}
    assert not scratch.exists()
    assert restarts == {"ort:cpu:O3": 0, "fault:segfault": 4, "fault:hang": 4, "fault:garbage": 0}

    mismatch_signatures = set()
    for index, (config, result) in enumerate(zip(configs, results), 1):
        assert result.index == index and result.config.seed == config.seed
        assert result.valid, result.reason
        assert result.verdict is Verdict.CRASH  # the most severe of crash, timeout, mismatch
        assert result.outcomes["ort:cpu:O3"].status == "ok"
        assert result.outcomes["fault:segfault"].signal == "SIGSEGV"
        assert result.outcomes["fault:hang"].status == "timeout"
        by_target = {f.targets[-1]: f for f in result.findings}
        assert set(by_target) == {"fault:segfault", "fault:hang", "fault:garbage"}
        assert by_target["fault:segfault"].verdict is Verdict.CRASH
        assert "SIGSEGV" in by_target["fault:segfault"].signature
        assert by_target["fault:hang"].verdict is Verdict.TIMEOUT
        assert by_target["fault:garbage"].verdict is Verdict.MISMATCH
        assert by_target["fault:garbage"].targets == ("torch:cpu", "fault:garbage")
        mismatch_signatures.add(by_target["fault:garbage"].signature)
        # Only the first test is saved: the later ones bring no new signature.
        assert result.new_signatures == ([f.signature for f in result.findings] if index == 1 else [])
        assert (result.case is not None) == (index == 1)
    assert len(mismatch_signatures) == 1
    (mismatch_signature,) = mismatch_signatures
    assert mismatch_signature.startswith("mismatch|torch:cpu|fault:garbage|Relu|float32")

    store = run_dir / "bug_cases"
    assert not [p.name for p in store.iterdir() if p.name.startswith(".tmp-") or p.name.endswith(".tmp")]
    cases = sorted(p for p in store.iterdir() if p.is_dir())
    assert [c.name for c in cases] == [results[0].case]
    case = cases[0]
    assert {p.name for p in case.iterdir()} == {"model.onnx", "inputs.npz", "meta.json", "error.log", "outputs",
                                                "repro.py"}
    assert {p.name for p in (case / "outputs").iterdir()} == {"torch_cpu.npz", "ort_cpu_O3.npz",
                                                             "fault_garbage.npz"}

    meta = json.loads((case / "meta.json").read_text())
    assert meta["verdict"] == "crash"
    assert meta["signature"] == SEGV_SIGNATURE
    assert meta["seed"] == 0 and meta["config"]["seed"] == 0
    assert meta["config"]["ops"] == ["core.ReLU"]
    assert GenConfig.from_json(meta["config"]) == configs[0]
    assert {f["signature"] for f in meta["findings"]} == {SEGV_SIGNATURE, HANG_SIGNATURE, mismatch_signature}
    assert meta["outcomes"]["fault:segfault"]["signal"] == "SIGSEGV"
    assert "fault:segfault" in meta["reproduce"] and "fault:garbage" in meta["reproduce"]
    error_log = (case / "error.log").read_text()
    assert "verdict: crash" in error_log and "SIGSEGV" in error_log and "fault:hang" in error_log

    # The saved case replays: ONNX Runtime on the saved model and inputs gives the saved outputs,
    # and they agree with the saved PyTorch reference.
    model = onnx.load(str(case / "model.onnx"))
    onnx.checker.check_model(model)
    inputs = load_tensors(case / "inputs.npz")
    assert set(inputs) == {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    session = ort.InferenceSession(str(case / "model.onnx"), providers=["CPUExecutionProvider"])
    replay = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))
    saved_ort = load_tensors(case / "outputs" / "ort_cpu_O3.npz")
    reference = load_tensors(case / "outputs" / "torch_cpu.npz")
    assert set(replay) == set(saved_ort) == set(reference)
    for name in replay:
        np.testing.assert_array_equal(replay[name], saved_ort[name])
        np.testing.assert_allclose(replay[name], reference[name], rtol=1e-5, atol=1e-6)

    index = json.loads((store / "index.json").read_text())
    assert set(index) == {SEGV_SIGNATURE, HANG_SIGNATURE, mismatch_signature}
    for signature, entry in index.items():
        assert entry["count"] == 4, signature
        assert entry["cases"] == [case.name], signature
    assert index[SEGV_SIGNATURE]["verdict"] == "crash"
    assert index[HANG_SIGNATURE]["verdict"] == "timeout"
    assert index[mismatch_signature]["verdict"] == "mismatch"


# -- tensor files -------------------------------------------------------------------------------
def test_save_tensors_is_atomic_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "t.npz"
    first = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "flag": np.array([True, False])}
    save_tensors(path, first)
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]
    loaded = load_tensors(path)
    assert set(loaded) == {"x", "flag"}
    for name, value in first.items():
        assert loaded[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded[name], value)

    save_tensors(path, {"z": np.full((4,), 2.5, dtype=np.float64)})  # replaces the whole file
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]
    assert list(load_tensors(path)) == ["z"]

    class Unconvertible:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("cannot convert")

    with pytest.raises(RuntimeError, match="cannot convert"):
        save_tensors(path, {"bad": Unconvertible()})
    assert list(load_tensors(path)) == ["z"]  # a failed write never damages the existing file


def test_failed_save_tensors_leaves_no_temp_file(tmp_path):
    class Unconvertible:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("cannot convert")

    with pytest.raises(RuntimeError):
        save_tensors(tmp_path / "t.npz", {"bad": Unconvertible()})
    assert list(tmp_path.iterdir()) == []


def test_load_tensors_refuses_pickled_object_arrays(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, ok=np.zeros(3, dtype=np.float32), evil=np.array([{"payload": 1}, None], dtype=object))
    with np.load(path, allow_pickle=True) as archive:  # the file really holds a pickle
        assert archive["evil"].dtype == object
    with pytest.raises(ValueError, match="allow_pickle"):
        load_tensors(path)
