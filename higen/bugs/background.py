"""Reduction in the background: the first case of every new credible root cause is reduced while the
campaign goes on, never stalling it.

One ``higen reduce CASE --signature S --budget B`` process at a time, at low CPU priority, with its
output in ``workers/reduce.log``; the fuzzing loop only polls it between tests. The reducer keeps
"the same root cause" (the pair still differs at the root cause's node) rather than "the same
signature". A finished reduction's canonical graph form (:func:`higen.bugs.rootcause.graph_form`) is
written into ``root_causes.json``; two root causes of one kind and blamed side whose reductions have
the same form are one defect found through different routes, and the later one becomes an alias
of the earlier (:meth:`higen.bugs.store.BugStore.note_reduction`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STARTUP_SLACK_S = 60.0  # imports and the first evaluation, beyond the search budget


@dataclass
class Job:
    case: Path
    signature: str
    key: str


class BackgroundReducer:
    """Queue of reductions, run one at a time in a niced child process (module doc)."""

    def __init__(self, log_dir: Path, budget_s: float, timeout_s: float, memory_limit_mb: int):
        self.log_dir = Path(log_dir)
        self.budget_s, self.timeout_s, self.memory_limit_mb = budget_s, timeout_s, memory_limit_mb
        self.queue: deque[Job] = deque()
        self.running: tuple[Job, subprocess.Popen, Path, float] | None = None
        self.done = 0

    def submit(self, case: Path, signature: str, key: str) -> None:
        self.queue.append(Job(Path(case), signature, key))
        self._start_next()

    def poll(self) -> list[tuple[Job, dict[str, Any]]]:
        """Finished reductions since the last call, as (job, summary); starts the next queued one."""
        finished = []
        if self.running is not None:
            job, process, out, deadline = self.running
            if process.poll() is None and time.monotonic() > deadline:
                process.kill()
                process.wait()
            if process.poll() is not None:
                self.running = None
                finished.append((job, self._summary(out, process.returncode)))
                self.done += 1
        self._start_next()
        return finished

    def close(self) -> int:
        """Stop the running reduction; returns how many were left undone (running or queued)."""
        left = len(self.queue) + (self.running is not None)
        if self.running is not None:
            self.running[1].kill()
            self.running[1].wait()
            self.running = None
        self.queue.clear()
        return left

    def _start_next(self) -> None:
        if self.running is not None or not self.queue:
            return
        job = self.queue.popleft()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = self.log_dir / f"reduce-{job.case.name}.json"
        command = [sys.executable, "-m", "higen.main", "reduce", str(job.case), "--signature", job.signature,
                   "--budget", str(self.budget_s), "--timeout", str(self.timeout_s),
                   "--memory-limit-mb", str(self.memory_limit_mb), "--json", str(out)]
        with open(self.log_dir / "reduce.log", "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                       preexec_fn=lambda: os.nice(10), start_new_session=True)
        self.running = (job, process, out, time.monotonic() + self.budget_s + STARTUP_SLACK_S)

    @staticmethod
    def _summary(out: Path, code: int | None) -> dict[str, Any]:
        try:
            return {**json.loads(out.read_text()), "exit": code}
        except (OSError, ValueError):
            return {"reproduced": False, "exit": code, "note": "the reducer ended without a result (see reduce.log)"}
