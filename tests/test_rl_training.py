"""Short real RL runs on ONNX Runtime through the command line (tiny networks, 4 tests per big epoch):
checkpoints, resume with continuing step counters, Ctrl-C, and identical decisions for one seed.
(Resuming from a Ctrl-C checkpoint takes the same path as from any other.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import higen.main

RL = [sys.executable, "-m", "higen.main", "--compiler", "ort", "--small-epochs", "4", "--max-nodes", "4",
      "--net-arch", "8", "--ppo-steps", "2", "--learning-starts", "2", "--no-progress",
      "--reward", "high.tests_per_s=0", "--reward", "low.time_norm=0"]  # the wall-clock inputs to a decision
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def rl_run(*args) -> subprocess.CompletedProcess:
    done = subprocess.run([*RL, *map(str, args)], capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr
    return done


def events(run_dir: Path, kind: str | None = None) -> list[dict]:
    found = [json.loads(line) for line in (run_dir / "training.log").read_text().splitlines()]
    return [e for e in found if kind is None or e["event"] == kind]


def logged(run_dir: Path) -> list[dict]:
    """The complete lines of a running campaign's log."""
    path = run_dir / "training.log"
    return [json.loads(line) for line in (path.read_text() if path.exists() else "").splitlines()
            if line.endswith("}")]


def latest_state(run_dir: Path) -> dict:
    root = run_dir / "checkpoints"
    folder = root / (root / "LATEST").read_text().strip()
    assert {p.name for p in folder.iterdir()} == {"ppo_high.zip", "sac_low.zip", "replay_buffer.npz", "run_state.json"}
    return json.loads((folder / "run_state.json").read_text())


def decisions(run_dir: Path) -> list[tuple]:
    return [(e["epoch"], e["free"], e["configs"]) for e in events(run_dir, "big_epoch")]


def test_rl_run_checkpoints_resumes_and_repeats_its_decisions(tmp_path):
    root = tmp_path / "runs"
    rl_run("--big-epochs", 3, "--run-root", root)
    first = root / "1"
    kinds = [e["event"] for e in events(first)]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("test") == 12 and kinds.count("big_epoch") == 3
    epochs = events(first, "big_epoch")
    assert [(e["ppo_steps"], e["sac_steps"]) for e in epochs] == [(1, 4), (2, 8), (3, 12)]
    for epoch in epochs:
        assert set(epoch["high_reward"]) >= {"new_bug", "validity", "diversity", "total"}
        assert sum(epoch["verdicts"].values()) == 4 and len(epoch["configs"]) == 4
        assert all(set(c) == {"seed", "free", *epoch["free"]} for c in epoch["configs"])
    tests = events(first, "test")
    assert all("total" in t["reward"] for t in tests)
    state = latest_state(first)
    assert state["reason"] == "end" and state["state"]["tests"] == 12 and state["state"]["big_epochs"] == 3
    assert state["models"]["ppo_high"]["num_timesteps"] == 3 and state["models"]["sac_low"]["num_timesteps"] == 12
    assert state["models"]["ppo_high"]["_n_updates"] > 0 and state["models"]["sac_low"]["_n_updates"] > 0
    assert len(state["state"]["tokens"]) == events(first, "end")[0]["unique_tokens"] > 0
    for board in ("ppo_high", "sac_low", "higen"):
        assert list((first / "tb" / board).glob("events.out.tfevents.*")), board

    rl_run("--big-epochs", 3, "--run-root", root)  # a fresh run, same seed: the same decisions
    assert decisions(root / "2") == decisions(first)
    assert [t["seed"] for t in events(root / "2", "test")] == [t["seed"] for t in tests]

    done = rl_run("--resume", first, "--big-epochs", 4)
    assert "resumed" in done.stderr
    resumed = events(first)
    assert [e["event"] for e in resumed].count("resume") == 1
    last = events(first, "big_epoch")[-1]
    assert (last["epoch"], last["ppo_steps"], last["sac_steps"]) == (3, 4, 16)  # the counters continue
    state = latest_state(first)
    assert state["state"]["tests"] == 16 and state["models"]["sac_low"]["num_timesteps"] == 16
    assert state["context"]["argv"][:2] == ["--compiler", "ort"]  # the original command line is kept



def test_checkpoints_every_n_big_epochs_and_a_small_sac_action_trained_every_k_tests(tmp_path):
    rl_run("--big-epochs", 5, "--checkpoint-every", 3, "--sac-train-every", 3, "--run-root", tmp_path,
           "--no-session-subdir")
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("ckpt-"))
    assert kept == ["ckpt-000003-000000012", "ckpt-000005-000000020"]  # every 3 big epochs, and the end
    state = latest_state(tmp_path)
    assert state["reason"] == "end" and state["settings"]["checkpoint_every"] == 3
    assert state["settings"]["sac_learned"] == ["max_nodes", "method", "vulnerable_ops", "input_search"]
    # one gradient step per 3 tests once 2 tests are in: at most 6 of the 20 tests' update calls train
    assert state["models"]["sac_low"]["_n_updates"] == (19 - 2 + 2) // 3 == 6
    folder = tmp_path / "checkpoints" / kept[-1]
    with np.load(folder / "replay_buffer.npz", allow_pickle=False) as buffer:
        assert buffer["actions"].shape[-1] == 7  # SAC's action: the four learned dimensions' blocks
    assert "uniform_blocks" in state["rng"]  # the generator of the other blocks resumes where it was


def test_bad_rl_flags_end_in_one_line(tmp_path, capsys):
    for flags, message in ((["--reward", "low.surprise=1"], "unknown low-level weight 'surprise'"),
                           (["--reward-config", str(tmp_path / "absent.toml")], "cannot read it"),
                           (["--ppo-steps", "1"], "--ppo-steps must be at least 2"),
                           (["--sac-learns", "ops,colour"], "unknown dimensions ['colour']"),
                           (["--checkpoint-every", "0"], "--checkpoint-every must be positive"),
                           (["--net-arch", "64,x"], "--net-arch '64,x'")):
        assert higen.main.main([*flags, "--run-root", str(tmp_path / "runs")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_to_change_the_run(tmp_path, capsys):
    assert higen.main.main(["--resume", str(tmp_path)]) == 2
    assert "no checkpoint there" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "ckpt-1").mkdir(parents=True)
    (run_dir / "checkpoints" / "LATEST").write_text("ckpt-1\n")
    (run_dir / "checkpoints" / "ckpt-1" / "run_state.json").write_text(json.dumps(
        {"format": 1, "context": {"argv": ["--seed", "3", "--small-epochs", "4"]}}))
    assert higen.main.main(["--resume", str(run_dir), "--seed", "5", "--small-epochs", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "higen: error: --resume keeps the run's own --seed (3); start a new run to change it"


def test_ctrl_c_writes_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    child = subprocess.Popen([*RL, "--big-epochs", "10000", "--run-root", str(run_dir), "--no-session-subdir"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:  # Ctrl-C once a big epoch is done (its checkpoint is then written), however long that takes
        guard = time.monotonic() + 1200  # only so that a broken run cannot hang the suite
        while not any(e["event"] == "big_epoch" for e in logged(run_dir)):
            assert child.poll() is None, child.communicate()[1][-2000:]
            assert time.monotonic() < guard, "no big epoch in 20 minutes"
            time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert "--resume" in err
    state = latest_state(run_dir)
    assert state["reason"] == "interrupt" and events(run_dir, "end")[0]["interrupted"] is True
    assert state["state"]["big_epochs"] >= 1
    assert state["models"]["ppo_high"]["num_timesteps"] == state["state"]["big_epochs"]
    assert state["models"]["sac_low"]["num_timesteps"] == state["state"]["tests"]  # a partial epoch included


def test_a_target_can_have_its_own_timeout(relu_add_case, tmp_path):
    """The plumbing of ``--tvm-timeout``: a target's own limit in the engine settings reaches an
    engine's backend pool (a remote pipeline's through the wire); here an impossible one, on ONNX
    Runtime so that the test stays fast. The other target keeps the common one."""
    from higen.backends.base import Target
    from higen.engine import EngineSettings, local_workers
    from higen.modes import Plan
    from higen.scale.wire import settings_from_json, settings_to_json

    model, inputs = relu_add_case
    plan = Plan("normal", [Target.parse("ort:cpu:O0"), Target.parse("ort:cpu:O3")], [("ort:cpu:O0", "ort:cpu:O3")])
    settings = EngineSettings(plan=plan, timeout_s=60.0, timeouts_by_target={"ort:cpu:O3": 1e-6})
    assert settings_from_json(settings_to_json(settings, plan)).timeouts_by_target == {"ort:cpu:O3": 1e-6}
    with local_workers(settings, tmp_path / "logs")[1] as pool:
        outcomes = pool.run(model, inputs, tmp_path)
    assert outcomes["ort:cpu:O0"].status == "ok"
    assert outcomes["ort:cpu:O3"].status == "timeout"


def test_checkpoint_parts_round_trip(tmp_path):
    """Random-generator states through JSON and SAC's replay buffer through npz come back exactly."""
    import random

    import numpy as np
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    from higen.agents import checkpoint as ckpt

    states = json.loads(json.dumps(ckpt.global_rng_states()))
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_global_rng_states(states)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == drawn

    obs_space, act_space = spaces.Box(0, 1, (3,), np.float32), spaces.Box(-1, 1, (5,), np.float32)
    buffer = ReplayBuffer(8, obs_space, act_space, device="cpu")
    rng = np.random.default_rng(0)
    for step in range(11):  # wraps around: full, pos 3
        buffer.add(rng.random((1, 3)), rng.random((1, 3)), rng.uniform(-1, 1, (1, 5)), np.array([step]),
                   np.array([step % 4 == 0]), [{}])
    ckpt.save_replay_buffer(buffer, tmp_path / "buffer.npz")
    again = ReplayBuffer(8, obs_space, act_space, device="cpu")
    ckpt.load_replay_buffer(again, tmp_path / "buffer.npz")
    assert (again.pos, again.full) == (buffer.pos, buffer.full) == (3, True)
    for name in ckpt.BUFFER_ARRAYS:
        assert np.array_equal(getattr(again, name), getattr(buffer, name)), name
