"""The instability numbers of a run: per-operator and per-target event counts, gathered into one
:class:`Summary` (written out by :mod:`higen.numerics.report`).

Source of the per-operator counts, in order of preference:

1. ``RUN_DIR/numerics.jsonl``, written during the campaign by :class:`higen.numerics.stats.NumericsRecorder`
   (every test, findings or not);
2. otherwise the run's saved bug cases, re-run here with their intermediates exposed on the targets
   each case ran on (crash-isolated workers). Only tests with findings are saved, so this sample is
   biased towards trouble: the summary says which source it used.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from higen.errors import UserError
from higen.numerics.stats import NumericsRecorder, record_test


@dataclass
class Summary:
    source: str  # what the counts come from, in words
    tests: int = 0
    counts: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))  # (op, target)
    disagreements: Counter = field(default_factory=Counter)  # (op, event) -> nodes
    alone: Counter = field(default_factory=Counter)  # (op, event, target, "with"/"without") -> nodes
    disagreement_dtypes: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    instrumented_failed: Counter = field(default_factory=Counter)  # target -> tests

    @property
    def targets(self) -> list[str]:
        return sorted({target for _, target in self.counts})

    def op_totals(self) -> dict[str, Counter]:
        totals: dict[str, Counter] = defaultdict(Counter)
        for (op, _), counts in self.counts.items():
            totals[op].update(counts)
        return dict(sorted(totals.items(), key=lambda item: (-weight(item[1]), item[0])))


def weight(counts: Counter) -> int:
    """Executions with an event or an error: how operators are ranked."""
    return counts["any"] + counts["error"]


def aggregate(records: Iterable[dict[str, Any]], source: str) -> Summary:
    summary = Summary(source)
    for record in records:
        summary.tests += 1
        for op, by_target in record.get("ops", {}).items():
            for target, counts in by_target.items():
                summary.counts[(op, target)].update(counts)
        for entry in record.get("disagreements", []):
            summary.disagreements[(entry["op"], entry["event"])] += 1
            summary.disagreement_dtypes[(entry["op"], entry["event"])][entry.get("dtype", "?")] += 1
            minority = "with" if len(entry["with"]) <= len(entry["without"]) else "without"
            for target in entry[minority]:
                summary.alone[(entry["op"], entry["event"], target, minority)] += 1
        summary.instrumented_failed.update(record.get("instrumented_failed", {}).keys())
    return summary


# -- sources -------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a numerics.jsonl; a torn last line (a killed campaign) is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def rerun_cases(run_dir: Path, targets: list[str] | None, timeout_s: float, memory_limit_mb: int,
                console=None) -> list[dict[str, Any]]:
    """Records for every saved bug case of ``run_dir``, from instrumented re-runs on its targets."""
    from higen.backends.base import Target
    from higen.backends.pool import BackendPool
    from higen.bugs.case import CaseError, load_case
    from higen.bugs.store import case_dirs
    from higen.tensors import scratch_dir

    cases = []
    for directory in case_dirs(run_dir):
        try:
            cases.append(load_case(directory))
        except CaseError as error:
            if console:
                console.print(f"[yellow]skipping {directory.name}: {error}[/yellow]")
    wanted = sorted({t for case in cases for t in case.targets if targets is None or t in targets})
    if not wanted:
        return []
    work = scratch_dir("higen-numerics-")
    records = []
    try:
        with BackendPool([Target.parse(t) for t in wanted], work / "logs", timeout_s, memory_limit_mb) as pool:
            for number, case in enumerate(cases):
                outcomes = {t: o for t, o in case.meta["outcomes"].items() if t in pool.workers}
                record = record_test(pool, case.model_path, case.inputs_path, work / str(number), outcomes)
                records.append({"case": case.path.name, "seed": case.meta.get("seed"),
                                "inputs": case.meta.get("config", {}).get("inputs", "gradient"), **record})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return records


def training_summary(run_dir: Path) -> dict[str, Any]:
    """Tests and verdicts from ``training.log`` (empty when the run has none)."""
    path = run_dir / "training.log"
    verdicts: Counter = Counter()
    if path.is_file():
        for record in read_jsonl(path):
            if record.get("event") == "test":
                verdicts[record.get("verdict", "?")] += 1
    return {"tests": sum(verdicts.values()), "verdicts": dict(verdicts)} if verdicts else {}


def build_summary(run_dir: Path, rerun: bool = False, targets: list[str] | None = None,
                  timeout_s: float = 60.0, memory_limit_mb: int = 8192, console=None) -> Summary:
    """The run's counts from its numerics.jsonl, or (``rerun``, or none recorded) from re-running its cases."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder: pass a run directory such as runs/1")
    recorded = run_dir / NumericsRecorder.FILE
    if recorded.is_file() and not rerun:
        return aggregate(read_jsonl(recorded), f"`{NumericsRecorder.FILE}` recorded during the campaign "
                                               "(every test, with or without findings)")
    records = rerun_cases(run_dir, targets, timeout_s, memory_limit_mb, console)
    if not records:
        raise UserError(f"{run_dir} has no {NumericsRecorder.FILE} and no bug case to re-run: run a campaign "
                        "with per-op recording (experiments/numerics_campaign.py) or pass a run with bug_cases/")
    return aggregate(records, f"re-run of {len(records)} saved bug cases with intermediates exposed "
                              "(only tests with findings are saved: biased towards trouble)")
