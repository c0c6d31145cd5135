"""gcovr totals of the cumulative ``.gcda`` files, sampled in the background (parent side).

The per-test branch novelty lives in :mod:`higen.coverage.gcov`; this module turns the same
cumulative counters into the covered/total figures of ``coverage_by_steps.csv``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from higen.coverage.gcov import GCDA, GCNO

GCOVR_KEYS = ("branch_covered", "branch_total", "line_covered", "line_total")

# -- gcovr totals (parent side) -------------------------------------------------------------------------
@dataclass
class GcovrResult:
    step: int
    time: float
    totals: dict[str, int] | None  # branch_covered/branch_total/line_covered/line_total; None: failed
    seconds: float = 0.0
    error: str = ""


@dataclass
class _Sample:
    step: int
    time: float
    work: str  # private directory: data/ (the snapshot), summary.json, gcovr.log
    copied: int
    started: float = 0.0


class GcovrSampler:
    """Runs gcovr on snapshots of the cumulative .gcda files, in the background.

    :meth:`request` copies the .gcda files (workers keep dumping into the originals) next to links
    to their .gcno files; gcovr (``--json-summary``, niced) runs on the copy, one run at a time, with
    at most one snapshot waiting behind it. A request finding both places taken is refused (that
    sample stays empty). :meth:`poll` hands back finished results and starts the waiting one.
    """

    def __init__(self, label: str, src_root: str, data_dir: str, gcovr: str = "gcovr", gcov: str = "gcov",
                 jobs: int = 1):
        self.label = label
        self.src_root = os.path.realpath(src_root)
        self.data_dir = os.path.abspath(data_dir)
        self.gcovr, self.gcov, self.jobs = gcovr, gcov, jobs
        self.proc: subprocess.Popen | None = None
        self.running: _Sample | None = None
        self.queued: _Sample | None = None

    @property
    def busy(self) -> bool:
        return self.running is not None

    def request(self, step: int) -> bool:
        """Snapshot now and run gcovr on it as soon as possible; False when refused."""
        if self.running is not None and self.queued is not None:
            return False
        sample = self._snapshot(step)
        if self.running is None:
            self._launch(sample)
        else:
            self.queued = sample
        return True

    def _snapshot(self, step: int) -> _Sample:
        work = tempfile.mkdtemp(prefix=f"higen-gcovr-{self.label}-", dir=os.path.dirname(self.data_dir))
        snapshot = os.path.join(work, "data")
        copied = 0
        for directory, _dirs, files in os.walk(self.data_dir):
            for name in files:
                if not name.endswith(GCDA):
                    continue
                source = os.path.join(directory, name)
                relative = os.path.relpath(source, self.data_dir)
                target_dir = os.path.join(snapshot, os.path.dirname(relative))
                os.makedirs(target_dir, exist_ok=True)
                shutil.copyfile(source, os.path.join(target_dir, name))
                # below the per-worker directory the path is the object's absolute path
                worker_relative = relative.split(os.sep, 1)[1] if os.sep in relative else relative
                gcno = os.sep + worker_relative[: -len(GCDA)] + GCNO
                if os.path.exists(gcno):
                    os.symlink(gcno, os.path.join(target_dir, name[: -len(GCDA)] + GCNO))
                copied += 1
        return _Sample(step, time.time(), work, copied)

    def _launch(self, sample: _Sample) -> None:
        sample.started = time.perf_counter()
        self.running = sample
        if not sample.copied:  # nothing dumped yet: the totals are unknown, not zero
            self.proc = subprocess.Popen(["false"])
            return
        command = [self.gcovr, "--root", self.src_root, "--json-summary", os.path.join(sample.work, "summary.json"),
                   "--gcov-executable", self.gcov, "-j", str(self.jobs), "--gcov-ignore-errors", "all",
                   "--gcov-ignore-parse-errors", "all", os.path.join(sample.work, "data")]
        with open(os.path.join(sample.work, "gcovr.log"), "wb") as log:
            self.proc = subprocess.Popen(command, cwd=sample.work, stdout=log, stderr=log,
                                         preexec_fn=lambda: os.nice(10))

    def poll(self, wait: bool = False) -> GcovrResult | None:
        """The oldest finished sample (totals None when gcovr failed), or None while none is."""
        if self.running is None:
            return None
        if wait:
            self.proc.wait()
        elif self.proc.poll() is None:
            return None
        sample, code = self.running, self.proc.returncode
        self.proc = self.running = None
        if self.queued is not None:
            self._launch(self.queued)
            self.queued = None
        seconds = time.perf_counter() - sample.started
        try:
            summary_path = Path(sample.work, "summary.json")
            if code == 0 and summary_path.exists():
                summary = json.loads(summary_path.read_text())
                return GcovrResult(sample.step, sample.time, {k: int(summary[k]) for k in GCOVR_KEYS}, seconds)
            log = Path(sample.work, "gcovr.log")
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else "no .gcda files yet"
            return GcovrResult(sample.step, sample.time, None, seconds, f"gcovr exit status {code}: {detail}")
        except (OSError, ValueError, KeyError) as error:
            return GcovrResult(sample.step, sample.time, None, seconds, f"gcovr summary unreadable: {error}")
        finally:
            shutil.rmtree(sample.work, ignore_errors=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        for sample in (self.running, self.queued):
            if sample is not None:
                shutil.rmtree(sample.work, ignore_errors=True)
        self.proc = self.running = self.queued = None
