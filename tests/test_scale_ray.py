"""Pipelines as Ray actors on a real (simulated) two-node cluster started by the tests: a short RL
campaign through the command line, a pipeline whose actor process is killed mid-run, and one-line
errors for an address where no cluster answers. One cluster serves the whole module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install -e ".[ray]"')

import higen.main  # noqa: E402
from higen.backends.base import Target  # noqa: E402
from higen.engine import EngineSettings  # noqa: E402
from higen.generation.config import GenConfig  # noqa: E402
from higen.modes import Plan  # noqa: E402
from higen.oracle import Verdict  # noqa: E402
from higen.scale.cluster import RayEngine, connect  # noqa: E402
from higen.tensors import load_tensors  # noqa: E402

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node, one CPU slot each (so one pipeline each)."""
    from ray.cluster_utils import Cluster

    started = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    started.add_node(num_cpus=1)
    started.wait_for_nodes()
    yield started
    started.shutdown()


def events(run_dir: Path, kind: str) -> list[dict]:
    found = [json.loads(line) for line in (run_dir / "training.log").read_text().splitlines()]
    return [e for e in found if e["event"] == kind]


def test_rl_campaign_on_two_nodes(cluster, tmp_path):
    """The default (RL) campaign with one pipeline on each node: the learner here, SAC's sub-envs
    there, exact budget, op support learned on the nodes and written to the run folder."""
    done = subprocess.run(
        [sys.executable, "-m", "higen.main", "--ray-address", cluster.address, "--compiler", "ort", "--max-nodes", "4",
         "--small-epochs", "5", "--max-tests", "10", "--ppo-steps", "2", "--learning-starts", "2", "--net-arch", "8",
         "--run-root", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr
    assert "ray: 2 pipelines on 2 node(s)" in done.stderr and "10 tests" in done.stderr
    run_dir = tmp_path / "1"
    pipelines = events(run_dir, "start")[0]["versions"]["pipelines"]
    assert len({p["node"] for p in pipelines}) == 2
    assert all(p["targets"] == ["ort:cpu:O0", "ort:cpu:O3"] for p in pipelines)  # no GPU here: CPU targets only
    assert [(e["tests"], e["sac_steps"]) for e in events(run_dir, "big_epoch")] == [(5, 5), (5, 10)]
    assert [t["index"] for t in events(run_dir, "test")] == list(range(1, 11))
    assert json.loads((run_dir / "allowed_ops.json").read_text())
    assert (run_dir / "checkpoints" / "LATEST").is_file()


def test_killed_pipeline_is_restarted_and_nothing_is_lost(cluster, tmp_path):
    """SIGKILL the second node's pipeline actor while it runs a test: that test is re-run by the other
    pipeline, Ray restarts the actor (its workers start again) and it serves again; every test is
    recorded once, findings travel back as bytes and are saved as complete cases."""
    plan = Plan("diff", [Target.parse("ort:cpu:O3"), Target.parse("fault:garbage")],
                [("torch:cpu", "ort:cpu:O3"), ("torch:cpu", "fault:garbage")])
    settings = EngineSettings(plan=plan, timeout_s=20, memory_limit_mb=4096, learn_support=False)
    configs = [GenConfig(seed=seed, ops=("core.ReLU",), dtypes=("float32",), max_nodes=3) for seed in range(40)]
    run_dir = tmp_path / "run"
    connect(cluster.address)
    with RayEngine(settings, run_dir) as engine:
        engine.start()
        assert engine.workers == 2
        victim = next(h for h in engine.pipelines if h.slot.node.node_id != cluster.head_node.node_id)
        old_pid = victim.info["pid"]
        for config in configs[: engine.depth]:
            engine.submit(config)
        os.kill(old_pid, signal.SIGKILL)  # a test is in flight on every pipeline
        results, submitted = [], engine.depth
        while len(results) < len(configs):
            following = configs[submitted] if submitted < len(configs) else None
            submitted += following is not None
            results.append(engine.finish(prefetch=following))
        assert engine.lost_tests >= 1
        deadline = time.monotonic() + 600  # a guard only: Ray restarts the actor when it can
        while victim.info["pid"] == old_pid and time.monotonic() < deadline:
            time.sleep(0.2)
        assert victim.info["pid"] != old_pid, "the killed pipeline did not come back"
        more = [GenConfig(seed=seed, ops=("core.ReLU",), dtypes=("float32",), max_nodes=3) for seed in range(40, 46)]
        for config in more[: engine.depth]:
            engine.submit(config)
        for i in range(len(more)):
            results.append(engine.finish(prefetch=more[i + engine.depth] if i + engine.depth < len(more) else None))
        served = json.loads(ray.get(victim.actor.info.remote()))["served"]
        assert served >= 1  # the restarted actor runs tests again
    assert not ray.is_initialized()
    assert [r.index for r in results] == list(range(1, 47))
    assert [r.config.seed for r in results] == list(range(46))
    assert all(r.verdict is Verdict.MISMATCH for r in results), [r.reason for r in results if not r.valid]
    index = json.loads((run_dir / "bug_cases" / "index.json").read_text())
    assert sum(entry["count"] for entry in index.values()) == 46
    cases = [p for p in (run_dir / "bug_cases").iterdir() if p.is_dir()]
    assert {p.name for p in cases} == {r.case for r in results if r.case} and len(cases) == len(index)
    case = run_dir / "bug_cases" / results[0].case
    assert {p.name for p in (case / "outputs").iterdir()} == {"torch_cpu.npz", "ort_cpu_O3.npz", "fault_garbage.npz"}
    onnx.checker.check_model(onnx.load(str(case / "model.onnx")))
    assert set(load_tensors(case / "inputs.npz"))
    meta = json.loads((case / "meta.json").read_text())
    assert meta["versions"]["host"] and meta["config"]["seed"] == 0


def test_unreachable_address_is_one_line(tmp_path, capsys):
    assert higen.main.main(["--ray-address", "127.0.0.1:1", "--run-root", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--ray-address 127.0.0.1:1: no Ray cluster reachable there" in lines[0], lines
    assert not (tmp_path / "runs").exists()  # refused before anything was written
