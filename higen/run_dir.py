"""Run directories: ``<run-root>/<N>/`` numbered per session with a ``LATEST`` file beside them,
and ``training.log``, one JSON object per line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def create_run_dir(run_root: Path, session_subdir: bool = True) -> Path:
    """Make the next numbered session directory (or use ``run_root`` itself) and update LATEST."""
    run_root = Path(run_root)
    run_root.mkdir(parents=True, exist_ok=True)
    if not session_subdir:
        return run_root
    while True:
        numbers = [int(p.name) for p in run_root.iterdir() if p.is_dir() and p.name.isdigit()]
        run_dir = run_root / str(max(numbers, default=0) + 1)
        try:
            run_dir.mkdir()
            break
        except FileExistsError:  # another campaign took that number first
            continue
    latest = run_root / f".LATEST.{os.getpid()}"
    latest.write_text(run_dir.name + "\n")
    os.replace(latest, run_root / "LATEST")
    return run_dir


class RunLog:
    """Appends JSON lines to ``training.log``; each line is flushed so a killed run loses nothing."""

    def __init__(self, path: Path):
        self.handle = open(path, "a", buffering=1)

    def write(self, event: str, **fields: Any) -> None:
        self.handle.write(json.dumps({"event": event, "time": time.time(), **fields}, default=str) + "\n")

    def close(self) -> None:
        self.handle.close()
