"""Checkpoints: both policies (SB3's own zip), SAC's replay buffer (npz), the run state and every
random generator's state (JSON); for the random strategy, its state only (JSON; torch is imported
only where a model is involved). Written atomically into ``RUN_DIR/checkpoints/<tag>/`` with
``checkpoints/LATEST`` naming the newest.

Loading never unpickles: the models are rebuilt from the recorded settings and only their tensors
are read back (``set_parameters``, i.e. ``torch.load(weights_only=True)``); the replay buffer is an
npz read with ``allow_pickle=False``; the rest is JSON. (SB3's ``PPO.load``/``SAC.load`` would also
read these zips, but they unpickle parts of them: use them on your own runs only.)
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from higen.errors import UserError
from higen.files import write_text_atomic

FORMAT_VERSION = 1
LATEST = "LATEST"
KEEP = 2  # checkpoints kept (the newest ones)
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint; the message says where HiGen looked and what to do."""


# -- random generators --------------------------------------------------------------------------
def global_rng_states() -> dict[str, Any]:
    import torch

    version, internal, gauss = random.getstate()
    legacy = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [legacy[0], legacy[1].tolist(), *legacy[2:]],
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}


def set_global_rng_states(states: dict[str, Any]) -> None:
    import torch

    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    raw = np.frombuffer(base64.b64decode(states["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))


def generator_state(generator: np.random.Generator) -> dict[str, Any]:
    return generator.bit_generator.state


def set_generator_state(generator: np.random.Generator, state: dict[str, Any]) -> None:
    generator.bit_generator.state = state


# -- SB3 models -----------------------------------------------------------------------------------
def model_counters(model) -> dict[str, int]:
    return {name: int(getattr(model, name)) for name in COUNTERS}


def load_model_weights(model, path: Path, counters: dict[str, int]) -> None:
    """Tensors only (weights, optimizer states, e.g. SAC's entropy coefficient), then the counters."""
    import torch
    from stable_baselines3.common.save_util import load_from_zip_file

    model.set_parameters(str(path), exact_match=True, device=model.device)
    _, _, variables = load_from_zip_file(str(path), load_data=False, device=model.device)
    with torch.no_grad():
        for name, value in (variables or {}).items():
            attrgetter(name)(model).data.copy_(value.data)
    for name, value in counters.items():
        setattr(model, name, int(value))


def save_replay_buffer(buffer, path: Path) -> None:
    filled = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {name: getattr(buffer, name)[:filled] for name in BUFFER_ARRAYS
              if getattr(buffer, name, None) is not None}
    with open(path, "wb") as handle:
        np.savez(handle, pos=np.int64(buffer.pos), full=np.bool_(buffer.full), **arrays)


def load_replay_buffer(buffer, path: Path) -> None:
    with np.load(path, allow_pickle=False) as data:
        for name in BUFFER_ARRAYS:
            if name in data.files and getattr(buffer, name, None) is not None:
                values = data[name]
                getattr(buffer, name)[: len(values)] = values
        buffer.pos, buffer.full = int(data["pos"]), bool(data["full"])


# -- the checkpoint folder ----------------------------------------------------------------------
def write_checkpoint(root: Path, tag: str, models: dict[str, Any], replay_buffer, state: dict[str, Any]) -> Path:
    """Write ``root/tag`` completely, then point ``root/LATEST`` at it; keep the newest KEEP (tags sort
    in time order)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{tag}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, model in models.items():
        model.save(tmp / f"{name}.zip")
    if replay_buffer is not None:
        save_replay_buffer(replay_buffer, tmp / "replay_buffer.npz")
    (tmp / "run_state.json").write_text(json.dumps({"format": FORMAT_VERSION, **state}, default=str))
    final = root / tag
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_text_atomic(root / LATEST, tag + "\n")
    older = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p != final)
    for stale in older[: max(0, len(older) - (KEEP - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if not pointer.is_file():
        raise CheckpointError(f"--resume {run_dir}: no checkpoint there ({pointer} is missing); "
                              "pass the folder of a run (runs/<N>) that completed at least one big epoch")
    folder = root / pointer.read_text().strip()
    if not (folder / "run_state.json").is_file():
        raise CheckpointError(f"--resume {run_dir}: checkpoint {folder} is incomplete; "
                              "point checkpoints/LATEST at an older one")
    return folder


def read_run_state(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "run_state.json").read_text())
    if data.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {folder} has format {data.get('format')}, this HiGen reads {FORMAT_VERSION}")
    return data
