"""Several pipelines on one machine (``--workers N``), with the real generator and runtimes: the same
tests as a serial run with a consistent bug store (and the very same store when findings do not hinge
on inputs), exact budgets and repeated decisions for the vectorized RL low level, one-line errors, and
where the cluster placement puts which targets (pure logic, no Ray needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import higen.main
from higen.backends.base import Target
from higen.engine import Engine, EngineSettings
from higen.generation.config import GenConfig
from higen.modes import Plan, normal_plan
from higen.oracle import Verdict
from higen.scale import default_workers
from higen.scale.cluster import Node, place
from higen.scale.engine import ParallelEngine

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
RL = ["--compiler", "ort", "--max-nodes", "4", "--net-arch", "8", "--ppo-steps", "2", "--learning-starts", "2",
      "--reward", "high.tests_per_s=0", "--reward", "low.time_norm=0"]  # the wall-clock inputs to a decision
VOLATILE = {"time", "created", "first_seen", "last_seen", "timings", "versions", "environment", "files", "wall_s",
            "compile_s", "run_s", "gen_s"}


def run(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "higen.main", "--no-progress", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=ENV)
    assert done.returncode == 0, done.stderr
    return done


def events(run_dir: Path, kind: str) -> list[dict]:
    found = [json.loads(line) for line in (run_dir / "training.log").read_text().splitlines()]
    return [e for e in found if e["event"] == kind]


def stable(value):
    """``value`` without what differs between two equal runs (clocks, durations, file hashes)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def store_contents(run_root: Path, session: str = "1") -> dict:
    cases = run_root / session / "bug_cases"
    assert not [p.name for p in cases.iterdir() if p.name.startswith(".")]  # no staging left over
    return {"signatures": stable(json.loads((run_root / "signatures.json").read_text()))
            if (run_root / "signatures.json").exists() else {},
            "index": stable(json.loads((cases / "index.json").read_text())) if (cases / "index.json").exists() else {},
            "cases": {p.name: (sorted(f.relative_to(p).as_posix() for f in p.rglob("*") if f.is_file()),
                               stable(json.loads((p / "meta.json").read_text())))
                      for p in sorted(cases.iterdir()) if p.is_dir()}}


def check_store(run_root: Path, tests: list[dict]) -> None:
    """The bug store agrees with the log: every finding counted once, every case saved whole, once."""
    shared = json.loads((run_root / "signatures.json").read_text()) if (run_root / "signatures.json").exists() else {}
    findings = [signature for t in tests for signature in t["findings"]]
    assert set(shared) == set(findings)
    assert {s: e["count"] for s, e in shared.items()} == {s: findings.count(s) for s in set(findings)}
    folder = run_root / "1" / "bug_cases"
    cases = {t["case"]: t for t in tests if t["case"]}
    assert {p.name for p in folder.iterdir() if p.is_dir()} == set(cases)  # no staging folder left over
    for name, test in cases.items():
        meta = json.loads((folder / name / "meta.json").read_text())
        assert meta["seed"] == test["seed"] and set(meta["saved_for"]) <= set(test["findings"])
        assert {p.name for p in (folder / name).iterdir()} >= {"model.onnx", "inputs.npz", "outputs", "error.log"}
    assert sorted(c for e in shared.values() for c in e["cases"]) == sorted(f"1/bug_cases/{n}" for n in cases)


def test_two_workers_run_the_same_tests_as_serial_with_a_consistent_store(tmp_path):
    """Random strategy, same seed and budget: --workers 2 runs the same tests (configs, order, count) as
    --workers 1, and its bug store agrees with its log; each pipeline has its own workers. (Verdicts
    may differ in rare borderline cases: NNSmith draws inputs from its generator's random state.)"""
    args = ["--strategy", "random", "--compiler", "ort", "--max-tests", 40, "--small-epochs", 10]
    run(*args, "--workers", 1, "--run-root", tmp_path / "serial")
    done = run(*args, "--workers", 2, "--run-root", tmp_path / "parallel")
    assert "40 tests" in done.stderr
    serial, parallel = tmp_path / "serial" / "1", tmp_path / "parallel" / "1"
    logs = {d: events(d, "test") for d in (serial, parallel)}
    configs = [[(t["index"], t["seed"], t["method"], t["free"]) for t in logs[d]] for d in (serial, parallel)]
    assert len(configs[1]) == 40 and [c[0] for c in configs[1]] == list(range(1, 41))
    assert configs[0] == configs[1]
    assert [e["configs"] for e in events(serial, "big_epoch")] == [e["configs"] for e in events(parallel, "big_epoch")]
    for run_dir in (serial, parallel):
        assert events(run_dir, "end")[0]["tests"] == 40
        check_store(run_dir.parent, logs[run_dir])
    workers = parallel / "workers"
    assert {p.name for p in workers.iterdir()} >= {"generator.log", "ort_cpu_O0.log", "ort_cpu_O3.log", "p1"}
    assert {p.name for p in workers.iterdir()} <= {"generator.log", "ort_cpu_O0.log", "ort_cpu_O3.log", "p1",
                                                  "analyst.log", "p0"}  # analysts start with the first finding
    assert {p.name for p in (workers / "p1").iterdir()} - {"analyst.log"} == {"generator.log", "ort_cpu_O0.log",
                                                                               "ort_cpu_O3.log"}
    assert (parallel / "coverage_by_steps.csv").read_text().count("\n") == 41  # one union, a row per test


def test_two_workers_rl_keeps_the_budget_and_repeats_its_decisions(tmp_path):
    """The vectorized low level: big epochs of exactly --small-epochs tests (5 on 2 pipelines: a step
    with an idle sub-env), --max-tests never exceeded, step counters count tests, the replay buffer holds
    only tests, and the same seed gives the same decisions."""
    for _ in range(2):
        run(*RL, "--workers", 2, "--small-epochs", 5, "--max-tests", 13, "--run-root", tmp_path)
    first, second = tmp_path / "1", tmp_path / "2"
    epochs = events(first, "big_epoch")
    assert [(e["tests"], e["ppo_steps"], e["sac_steps"]) for e in epochs] == [(5, 1, 5), (5, 2, 10), (3, 3, 13)]
    assert [t["index"] for t in events(first, "test")] == list(range(1, 14))
    assert events(first, "end")[0]["tests"] == 13
    folder = first / "checkpoints" / (first / "checkpoints" / "LATEST").read_text().strip()
    state = json.loads((folder / "run_state.json").read_text())
    assert state["models"]["sac_low"]["num_timesteps"] == 13 and state["state"]["tests"] == 13
    with np.load(folder / "replay_buffer.npz", allow_pickle=False) as buffer:
        assert int(buffer["pos"]) == 12  # the budget's last step ends SAC's rollout before it is stored
        assert buffer["observations"].shape[1] == 1  # flat: one row per test, as in a serial run
    decisions = [[(e["free"], e["configs"]) for e in events(d, "big_epoch")] for d in (first, second)]
    assert decisions[0] == decisions[1]


def test_two_workers_resume_where_the_run_stopped(tmp_path):
    """A run on two pipelines resumed with a larger budget: the pipelines deliver the tests that follow
    the logged ones (the first after the resume is not awaited under index 1)."""
    args = ["--strategy", "random", "--compiler", "ort", "--max-nodes", 4, "--small-epochs", 3, "--workers", 2,
            "--no-support-probe", "--run-root", tmp_path, "--no-session-subdir"]
    run(*args, "--max-tests", 6)
    run("--resume", tmp_path, "--max-tests", 9)
    assert [t["index"] for t in events(tmp_path, "test")] == list(range(1, 10))
    assert [e["epoch"] for e in events(tmp_path, "big_epoch")] == [0, 1, 2]


def garbage_plan() -> Plan:
    """ONNX Runtime and a backend that returns wrong numbers: every test has a finding."""
    return Plan("diff", [Target.parse("ort:cpu:O3"), Target.parse("fault:garbage")],
                [("torch:cpu", "ort:cpu:O3"), ("torch:cpu", "fault:garbage")])


def test_parallel_engine_records_like_the_serial_engine(tmp_path):
    """Findings on every test: the driver records them in test order, so cases, counts and the
    signature index are those of the serial engine; counters and coverage cover all pipelines."""
    configs = [GenConfig(seed=seed, ops=("core.ReLU", "core.Add"), dtypes=("float32",), max_nodes=3)
               for seed in range(10)]
    outcomes = {}
    for name, engine in (("serial", Engine), ("parallel", ParallelEngine)):
        settings = EngineSettings(plan=garbage_plan(), timeout_s=10, memory_limit_mb=4096, learn_support=False,
                                  examples_per_signature=2)
        kwargs = {"workers": 3} if engine is ParallelEngine else {}
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "LATEST").write_text("1\n")  # a numbered session: the run root is its parent
        with engine(settings, tmp_path / name / "1", **kwargs) as running:
            running.start()
            assert running.workers == (3 if engine is ParallelEngine else 1)
            for config in configs[: running.depth]:
                running.submit(config)
            results = [running.finish(prefetch=configs[i + running.depth] if i + running.depth < len(configs) else None)
                       for i in range(len(configs))]
            outcomes[name] = ([(r.index, r.config.seed, r.verdict, [f.signature for f in r.findings],
                                r.new_signatures, r.case) for r in results],
                              running.tests_done, dict(running.verdicts), running.signatures,
                              running.coverage.covered())
    assert outcomes["serial"] == outcomes["parallel"]
    rows, done, verdicts, signatures, _ = outcomes["parallel"]
    assert done == 10 and verdicts == {"mismatch": 10} and all(r[2] is Verdict.MISMATCH for r in rows)
    assert store_contents(tmp_path / "serial") == store_contents(tmp_path / "parallel")
    index = json.loads((tmp_path / "parallel" / "signatures.json").read_text())
    assert set(index) == signatures
    assert sum(entry["count"] for entry in index.values()) == sum(len(r[3]) for r in rows)
    for entry in index.values():  # two examples kept per signature, each a complete case
        assert len(entry["cases"]) == min(2, entry["count"])
        assert all((tmp_path / "parallel" / case / "meta.json").is_file() for case in entry["cases"])
    assert sum(1 for r in rows if r[5]) == sum(len(entry["cases"]) for entry in index.values())


def test_workers_flag_errors_are_one_line(tmp_path, capsys):
    for flags, message in ((["--workers", "0"], "--workers must be positive"),
                           (["--workers", "2", "--record-numerics"], "--record-numerics"),
                           (["--ray-address", "auto", "--record-numerics"], "--record-numerics")):
        assert higen.main.main([*flags, "--run-root", str(tmp_path / "runs")]) == 2, flags
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
    assert default_workers() == max(1, len(os.sched_getaffinity(0)) - 1)


def test_ray_address_without_ray_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    assert higen.main.main(["--ray-address", "auto", "--run-root", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[ray]"' in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_placement_pins_runtimes_and_gpus():
    """One pipeline per CPU slot, interleaved across nodes; a node without a required runtime gets
    none; GPU targets only where there is a GPU, with that node's share of its GPUs."""
    plan = normal_plan("ort", with_gpu=True)  # ort:cuda:O3 is optional
    nodes = [Node("a" * 8, "cpu-box", cpus=2, gpus=0, runtimes={"ort", "tvm"}),
             Node("b" * 8, "gpu-box", cpus=2, gpus=1, runtimes={"ort"}, gpu=True),
             Node("c" * 8, "no-ort", cpus=4, gpus=0, runtimes={"tvm"})]
    slots, skipped = place(plan, nodes)
    assert [s.node.host for s in slots] == ["cpu-box", "gpu-box", "cpu-box", "gpu-box"]
    targets = {s.node.host: [t.name for t in s.plan.targets] for s in slots}
    assert targets == {"cpu-box": ["ort:cpu:O0", "ort:cpu:O3"], "gpu-box": ["ort:cpu:O0", "ort:cpu:O3", "ort:cuda:O3"]}
    assert {s.node.host: s.gpus for s in slots} == {"cpu-box": 0.0, "gpu-box": 0.5}
    assert all("ort:cuda:O3" not in pair for s in slots if s.node.host == "cpu-box" for pair in s.plan.pairs)
    assert len(skipped) == 1 and skipped[0].startswith("no-ort") and "ort is not installed" in skipped[0]
    assert [s.node.host for s in place(plan, nodes, limit=3)[0]] == ["cpu-box", "gpu-box", "cpu-box"]
    gpu_only = Plan("diff", [Target.parse("ort:cuda:O3")], [("torch:cpu", "ort:cuda:O3")])
    slots, skipped = place(gpu_only, nodes)
    assert [s.node.host for s in slots] == ["gpu-box", "gpu-box"] and len(skipped) == 2
    assert any("no GPU" in line for line in skipped)
