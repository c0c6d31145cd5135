"""Tensor files: ``.npz`` written atomically and always read with ``allow_pickle=False``.

Bug cases travel between people, so nothing HiGen reads back may execute code: no pickles anywhere.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from higen.files import replacing

Tensors = dict[str, np.ndarray]


def scratch_dir(prefix: str = "higen-") -> Path:
    """A fresh private directory on tmpfs when the machine has one (tensor hand-over is then RAM-speed)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def save_tensors(path: str | os.PathLike, tensors: Tensors) -> None:
    """Write ``tensors`` to ``path`` (.npz) atomically: readers see the old file or the whole new one."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{name: np.asarray(value) for name, value in tensors.items()})


def load_tensors(path: str | os.PathLike) -> Tensors:
    """Read an .npz written by :func:`save_tensors` (or by anyone: object arrays are refused)."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
