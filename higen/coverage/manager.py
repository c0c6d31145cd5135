"""The parent side of coverage: the union of features per collector, new-feature counts per test,
``coverage_by_steps.csv`` and gcovr totals in the background.

Numbers exposed for rewards (see docs/coverage.md):

- :meth:`CoverageManager.update` / :meth:`CoverageManager.observe` return, per test, the number of
  features each collector saw for the first time in the campaign (``TestResult.coverage_new``).
  A collector that could not report for a test (its worker crashed, timed out, or the collector
  failed) is absent from the dict, never 0.
- :meth:`CoverageManager.covered` is the union size per collector; :meth:`epoch_growth` the growth
  since its previous call (one call per big epoch); :meth:`gcovr_totals` the latest gcovr totals.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from higen.coverage.gcovr import GcovrResult, GcovrSampler
from higen.coverage.worker import ENV
from higen.files import replacing, write_text_atomic

STRUCTURE = "structure"
#: ``--coverage`` families -> (runtime, collector name)
FAMILIES: dict[str, tuple[str, str]] = {
    "ort": ("ort", "ort_transformers"),
    "ov": ("ov", "ov_layers"),
    "ov-passes": ("ov", "ov_passes"),
    "tvm-py": ("tvm", "tvm_py"),
}
CSV_NAME = "coverage_by_steps.csv"
#: Every feature the first time it is seen, one JSON line per test that saw new ones: the union of a
#: resumed run is rebuilt from it (``CoverageManager.resume``).
JOURNAL_NAME = "coverage_union.jsonl"
FLUSH_TIMEOUT_S = 120.0  # one __gcov_dump of a full TVM build takes ~0.1 s; a loaded machine, more


@dataclass
class GcovBuild:
    """An instrumented build of one runtime: its source tree and its build tree (the .gcno files)."""

    src: str
    build: str


@dataclass
class CoverageSettings:
    families: tuple[str, ...] = ()  # keys of FAMILIES
    gcov: dict[str, GcovBuild] = field(default_factory=dict)  # runtime ("tvm", "ov") -> its build
    every: int = 100  # gcovr every N tests; 0: only at the end
    reset: bool = False  # drop counters of start-up and the support probe (gcov)
    data_dir: str | None = None  # GCOV_PREFIX root; default a fresh directory on tmpfs, removed at the end
    gcovr: str = "gcovr"
    gcov_tool: str = "gcov"
    final_sample: bool = True  # a last gcovr run when the campaign ends (waited for)


def collector_names(settings: CoverageSettings, runtime: str) -> list[str]:
    names = [name for family, (rt, name) in FAMILIES.items() if family in settings.families and rt == runtime]
    if runtime in settings.gcov:
        names.append(f"gcov_{runtime}")
    return names


class CoverageCsv:
    """``coverage_by_steps.csv``: a row per test, appended as soon as complete; empty = not measured.
    An existing file (a resumed run) keeps its complete rows; a row cut by a kill is dropped."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = Path(path)
        self.columns = ["step", "time", *columns]
        self.rows: list[dict[str, Any]] = self._existing_rows()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rewrite_sorted()

    def _existing_rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        text = self.path.read_text()
        complete = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(complete.splitlines()))
        return [{**{k: v for k, v in row.items() if v not in ("", None)}, "step": int(row["step"])} for row in rows]

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([_cell(row.get(c)) for c in self.columns])

    def truncate(self, last_step: int) -> None:
        """Drop rows after ``last_step`` (tests a killed run measured but never logged)."""
        self.rows = [row for row in self.rows if row["step"] <= last_step]
        self.rewrite_sorted()

    def rewrite_sorted(self) -> None:
        """Rows in step order (a row held for a gcovr sample is written when the sample is done)."""
        with replacing(self.path) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            for row in sorted(self.rows, key=lambda r: r["step"]):
                writer.writerow([_cell(row.get(c)) for c in self.columns])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class CoverageManager:
    """Union of features per collector; new-feature counts per test; CSV; gcovr samples."""

    def __init__(self, settings: CoverageSettings | None = None, run_dir: Path | None = None,
                 targets: Iterable[str] = ()):
        self.settings = settings or CoverageSettings()
        self.targets = list(targets)
        self.by_target = {t: collector_names(self.settings, t.split(":")[0]) for t in self.targets}
        backend_names = sorted({n for names in self.by_target.values() for n in names})
        self.names = [STRUCTURE, *backend_names]
        self.union: dict[str, set[str]] = {name: set() for name in self.names}
        self.errors: dict[str, tuple[int, str]] = {}
        self.run_dir = Path(run_dir) if run_dir else None
        self._epoch_mark = self.covered()
        self.samplers: dict[str, GcovrSampler] = {}
        self.latest_gcovr: dict[str, GcovrResult] = {}
        self._held: dict[int, tuple[dict[str, Any], set[str]]] = {}  # step -> (row, labels still running)
        self._last_row: dict[str, Any] | None = None
        self._step = 0  # the test being observed (journal lines carry it)
        self._own_data_dir = False
        self._closed = False
        self.data_dir: str | None = None
        runtimes_with_gcov = [rt for rt in self.settings.gcov if any(t.split(":")[0] == rt for t in self.targets)]
        if runtimes_with_gcov:
            if self.settings.data_dir:
                self.data_dir = os.path.abspath(self.settings.data_dir)
                os.makedirs(self.data_dir, exist_ok=True)
            else:
                base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
                self.data_dir = tempfile.mkdtemp(prefix="higen-gcov-", dir=base)
                self._own_data_dir = True
            for runtime in runtimes_with_gcov:
                directory = os.path.join(self.data_dir, runtime)
                if self.settings.reset:
                    shutil.rmtree(directory, ignore_errors=True)
                os.makedirs(directory, exist_ok=True)
                self.samplers[runtime] = GcovrSampler(runtime, self.settings.gcov[runtime].src, directory,
                                                      self.settings.gcovr, self.settings.gcov_tool)
        columns = [f"{name}_covered" for name in self.names]
        for label in self.samplers:
            at = columns.index(f"gcov_{label}_covered") + 1
            columns[at:at] = [f"gcov_{label}_total", f"gcovr_{label}_branch_covered",
                              f"gcovr_{label}_line_covered", f"gcovr_{label}_line_total"]
        self.csv = CoverageCsv(self.run_dir / CSV_NAME, columns) if self.run_dir else None
        self.journal = open(self.run_dir / JOURNAL_NAME, "a", buffering=1) if self.run_dir else None

    # -- wiring ----------------------------------------------------------------------------------------
    @property
    def backend_enabled(self) -> bool:
        return any(self.by_target.values())

    def worker_env(self) -> dict[str, dict[str, str]]:
        """Per target: the environment that turns its worker's collectors on (empty: none)."""
        env = {}
        for target, names in self.by_target.items():
            if not names:
                continue
            spec: dict[str, Any] = {}
            for name in names:
                options: dict[str, Any] = {}
                if name.startswith("gcov_"):
                    runtime = name[len("gcov_"):]
                    build = self.settings.gcov[runtime]
                    options = {"src": build.src, "build": build.build, "reset": self.settings.reset,
                               "prefix": os.path.join(self.data_dir, runtime, target.replace(":", "_")),
                               "dump_every": self.settings.every}
                spec[name] = options
            env[target] = {ENV: json.dumps({"collectors": spec})}
        return env

    def configure(self, pool: Any) -> None:
        """Give each backend worker its collectors (before the workers are launched), after the
        branch maps of every instrumented build are in the cache."""
        for runtime in self.samplers:
            self._warm_branch_maps(runtime)
        for target, variables in self.worker_env().items():
            if target in pool.workers:
                spec = pool.workers[target].spec
                spec.env = {**(spec.env or {}), **variables}

    def _warm_branch_maps(self, runtime: str) -> None:
        """Parse the build's .gcno files not cached yet (minutes once per build: ~600 files for TVM),
        with a progress bar; a worker then loads them instead of parsing under a test's timeout."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from higen.coverage.gcov import warm_branch_maps

        build = self.settings.gcov[runtime]
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=True) as progress:
            task = progress.add_task(f"gcov_{runtime}: branch maps of {build.build}", total=None)
            problems = warm_branch_maps(build.src, build.build,
                                        progress=lambda done, total: progress.update(task, completed=done, total=total))
        if problems:
            count, first = self.errors.get(f"gcov_{runtime}", (0, problems[0]))
            self.errors[f"gcov_{runtime}"] = (count + len(problems), first)

    def flush(self, pool: Any) -> None:
        """Before the workers stop: each gcov worker writes the counters of its tests since its last
        dump into the .gcda files, so that gcovr's last run totals every test."""
        if not self.samplers:
            return
        for target, names in self.by_target.items():
            worker = pool.workers.get(target)
            if worker is None or not worker.alive or not any(n.startswith("gcov_") for n in names):
                continue
            try:
                errors = worker.call({"coverage_flush": True}, FLUSH_TIMEOUT_S).get("errors") or {}
            except Exception as error:  # a dead worker: its last counts are lost, the union is not
                errors = {"gcov": f"{type(error).__name__}: {error}"}
            for name, message in errors.items():
                count, first = self.errors.get(name, (0, f"{target}: flush: {message}"))
                self.errors[name] = (count + 1, first)

    def enable(self, pool: Any) -> None:
        """From now on every request is measured (call after the op-support probe)."""
        pool.collect_coverage = self.backend_enabled

    # -- per test --------------------------------------------------------------------------------------
    def update(self, features: dict[str, Iterable[str]], baseline: dict[str, Iterable[str]] | None = None
               ) -> dict[str, int]:
        """Add one test's features; returns per collector how many were new. ``baseline`` features
        (executed outside any test) join the union without counting as new."""
        fresh = {name: set(found) - self.union.setdefault(name, set()) for name, found in (baseline or {}).items()}
        for name, found in fresh.items():
            self.union[name].update(found)
        new = {}
        for name, found in features.items():
            seen = self.union.setdefault(name, set())
            added = set(found) - seen
            seen.update(added)
            fresh.setdefault(name, set()).update(added)
            new[name] = len(added)
        self._journal(fresh)
        return new

    def observe(self, step: int, tokens: Iterable[str], outcomes: dict[str, Any] | None = None) -> dict[str, int]:
        """One test: structure tokens plus what the backend workers sent back (taken out of each
        ``Outcome.extra["coverage"]``). Writes the CSV row and starts gcovr when due."""
        features: dict[str, set[str]] = {STRUCTURE: set(tokens)}
        baseline: dict[str, set[str]] = {}
        for target, outcome in (outcomes or {}).items():
            payload = outcome.extra.pop("coverage", None)
            if payload is None:
                continue
            for name, found in payload.get("baseline", {}).items():
                baseline.setdefault(name, set()).update(found)
            for name, found in payload.get("features", {}).items():
                features.setdefault(name, set()).update(found)
            for name, message in payload.get("errors", {}).items():
                count, first = self.errors.get(name, (0, f"{target}: {message}"))
                self.errors[name] = (count + 1, first)
        self._step = step
        new = self.update(features, baseline)
        self._record(step, new)
        return new

    def _journal(self, fresh: dict[str, set[str]]) -> None:
        fresh = {name: sorted(found) for name, found in fresh.items() if found}
        if fresh and self.journal is not None:
            self.journal.write(json.dumps({"step": self._step, "new": fresh}) + "\n")

    def resume(self, last_step: int) -> None:
        """Continue a run whose tests up to ``last_step`` were logged: the union from the journal,
        the CSV without the rows of later (unlogged) tests."""
        if self.run_dir is None:
            return
        path = self.run_dir / JOURNAL_NAME
        self.journal.close()
        kept = []
        for line in path.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # cut by a kill
            entry = json.loads(line)
            if entry["step"] > last_step:
                continue
            kept.append(line)
            for name, found in entry["new"].items():
                self.union.setdefault(name, set()).update(found)
        write_text_atomic(path, "".join(kept))
        self.journal = open(path, "a", buffering=1)
        self._epoch_mark = self.covered()
        self.csv.truncate(last_step)

    def _record(self, step: int, new: dict[str, int]) -> None:
        self._poll_gcovr(wait=False)
        if self.csv is None:
            return
        row: dict[str, Any] = {"step": step, "time": time.time()}
        for name in self.names:
            if name in new:
                row[f"{name}_covered"] = len(self.union[name])
        self._last_row = row
        due = self.settings.every > 0 and step % self.settings.every == 0
        requested = [label for label, sampler in self.samplers.items() if due and sampler.request(step)]
        if requested:
            self._held[step] = (row, set(requested))
        else:
            self.csv.append(row)

    def _poll_gcovr(self, wait: bool) -> None:
        """Collect finished gcovr samples into their rows; write rows no longer waiting."""
        for label, sampler in self.samplers.items():
            while (result := sampler.poll(wait=wait)) is not None:
                if result.totals is not None:
                    self.latest_gcovr[label] = result
                else:
                    count, first = self.errors.get(f"gcovr_{label}", (0, result.error))
                    self.errors[f"gcovr_{label}"] = (count + 1, first)
                held = self._held.get(result.step)
                if held is not None:
                    _fill_gcovr(held[0], label, result)
                    held[1].discard(label)
                elif self._last_row is not None and self._last_row["step"] == result.step:
                    _fill_gcovr(self._last_row, label, result)  # the final sample
        for step in [s for s, (_, waiting) in self._held.items() if not waiting]:
            if self.csv is not None:
                self.csv.append(self._held.pop(step)[0])

    # -- numbers for the agents ------------------------------------------------------------------------
    def covered(self) -> dict[str, int]:
        return {name: len(found) for name, found in self.union.items()}

    def epoch_growth(self) -> dict[str, int]:
        """Features added per collector since the previous call (call once per big epoch)."""
        now = self.covered()
        growth = {name: now[name] - self._epoch_mark.get(name, 0) for name in now}
        self._epoch_mark = now
        return growth

    def gcovr_totals(self) -> dict[str, dict[str, int]]:
        return {label: dict(result.totals) for label, result in self.latest_gcovr.items()}

    # -- end -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for running gcovr samples, take a final one, write the CSV in step order."""
        if self._closed:
            return
        self._closed = True
        try:
            self._poll_gcovr(wait=True)
            last = self._last_row
            if self.settings.final_sample and last is not None and self.samplers:
                for label, sampler in self.samplers.items():
                    if f"gcovr_{label}_branch_covered" not in last:
                        sampler.request(last["step"])
                self._poll_gcovr(wait=True)
            if self.run_dir is not None:
                for label, result in self.latest_gcovr.items():
                    (self.run_dir / f"gcovr_{label}_summary.json").write_text(
                        json.dumps({"step": result.step, "time": result.time, **result.totals}) + "\n")
                if self.errors:
                    (self.run_dir / "coverage_errors.json").write_text(json.dumps(
                        {name: {"count": count, "first": first} for name, (count, first) in self.errors.items()},
                        indent=1) + "\n")
            for step in list(self._held):
                if self.csv is not None:
                    self.csv.append(self._held.pop(step)[0])
            if self.csv is not None:
                self.csv.rewrite_sorted()
        finally:
            if self.journal is not None:
                self.journal.close()
            for sampler in self.samplers.values():
                sampler.stop()
            if self._own_data_dir and self.data_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)


def _fill_gcovr(row: dict[str, Any], label: str, result: GcovrResult) -> None:
    if result.totals is None:
        return
    row[f"gcov_{label}_total"] = result.totals["branch_total"]
    row[f"gcovr_{label}_branch_covered"] = result.totals["branch_covered"]
    row[f"gcovr_{label}_line_covered"] = result.totals["line_covered"]
    row[f"gcovr_{label}_line_total"] = result.totals["line_total"]
