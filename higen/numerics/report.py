"""``higen numerics RUN_DIR --out DIR``: the instability report of a run, per operator and target.

Source of the per-operator counts, in order of preference:

1. ``RUN_DIR/numerics.jsonl``, written during the campaign by :class:`higen.numerics.stats.NumericsRecorder`
   (every test, findings or not);
2. otherwise the run's saved bug cases, re-run here with their intermediates exposed on the targets
   each case ran on (crash-isolated workers). Only tests with findings are saved, so this sample is
   biased towards trouble: the report says which source it used.

Writes ``numerics.csv`` (op, target, counts, rates), ``disagreements.csv``, ``numerics.md``,
``by_operator.png`` (stacked bars per operator) and ``heatmap.png`` (target x operator share of
executions with an event).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from higen.numerics.stats import COUNTS, EVENTS, NumericsRecorder, record_test

TOP_OPS = 30  # operators shown in the figures: those with events, most first


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
        return dict(sorted(totals.items(), key=lambda item: (-_weight(item[1]), item[0])))


def _weight(counts: Counter) -> int:
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


# -- writing -------------------------------------------------------------------------------------
def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.4f}" if whole else ""


def write_csv(summary: Summary, out: Path) -> None:
    with open(out / "numerics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["op", "target", *COUNTS, *(f"{e}_rate" for e in (*EVENTS, "any"))])
        for op in summary.op_totals():
            for target in summary.targets:
                counts = summary.counts.get((op, target))
                if counts:
                    writer.writerow([op, target, *(counts[c] for c in COUNTS),
                                     *(_rate(counts[e], counts["runs"]) for e in (*EVENTS, "any"))])
    with open(out / "disagreements.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["op", "event", "nodes", "dtypes", "target", "side", "times_alone"])
        for (op, event), number in summary.disagreements.most_common():
            dtypes = " ".join(f"{d}:{n}" for d, n in summary.disagreement_dtypes[(op, event)].most_common())
            for (op2, event2, target, side), alone in sorted(summary.alone.items()):
                if (op2, event2) == (op, event):
                    writer.writerow([op, event, number, dtypes, target, side, alone])


def plot(summary: Summary, out: Path) -> list[str]:
    """by_operator.png and heatmap.png; returns the file names written."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    totals = summary.op_totals()
    ops = [op for op, counts in totals.items() if _weight(counts)][:TOP_OPS]  # operators with an event
    if not ops:
        return []
    series = {
        "NaN": [totals[op]["nan"] for op in ops],
        "Inf (pole)": [totals[op]["inf"] - totals[op]["overflow"] for op in ops],
        "overflow": [totals[op]["overflow"] for op in ops],
        "underflow": [totals[op]["underflow"] for op in ops],
        "error": [totals[op]["error"] for op in ops],
    }
    figure, axis = plt.subplots(figsize=(10, 0.32 * len(ops) + 1.6))
    left = np.zeros(len(ops))
    for label, values in series.items():
        axis.barh(ops, values, left=left, label=label)
        left += np.array(values)
    axis.invert_yaxis()
    axis.set_xlabel(f"node executions with the event (all targets, {summary.tests} tests)")
    axis.set_title("Numerical events by operator")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(out / "by_operator.png", dpi=110)
    plt.close(figure)

    targets = summary.targets
    grid = np.full((len(targets), len(ops)), np.nan)
    for row, target in enumerate(targets):
        for column, op in enumerate(ops):
            counts = summary.counts.get((op, target))
            if counts and counts["runs"]:
                grid[row, column] = counts["any"] / counts["runs"]
    figure, axis = plt.subplots(figsize=(0.42 * len(ops) + 2.5, 0.55 * len(targets) + 2.2))
    image = axis.imshow(np.ma.masked_invalid(grid), cmap="magma_r", vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(len(targets)), targets)
    for row in range(len(targets)):
        for column in range(len(ops)):
            if not np.isnan(grid[row, column]):
                value = grid[row, column]
                axis.text(column, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                          color="white" if value > 0.5 else "black")
    figure.colorbar(image, ax=axis, label="executions with an event")
    axis.set_title("Share of executions with NaN/Inf/overflow/underflow, in % (blank: never ran there)")
    figure.tight_layout()
    figure.savefig(out / "heatmap.png", dpi=110)
    plt.close(figure)
    return ["by_operator.png", "heatmap.png"]


def markdown(summary: Summary, images: list[str], context: dict[str, Any]) -> str:
    totals = summary.op_totals()
    lines = ["# Numerical instability report", "", f"Source: {summary.source}. Records: {summary.tests}. "
             f"Targets: {', '.join(f'`{t}`' for t in summary.targets) or 'none'}."]
    for key, value in context.items():
        lines.append(f"{key}: {value}.")
    if summary.instrumented_failed:
        failed = ", ".join(f"`{t}` {n}" for t, n in sorted(summary.instrumented_failed.items()))
        lines.append(f"Instrumented re-runs that failed (those tests have no per-node counts there): {failed}.")
    lines += ["", "Counts are node executions (a node of a test on a target). *NaN*: NaN out of non-NaN operands; "
              "*Inf*: Inf out of finite operands (pole or overflow); *overflow*: such an Inf from non-zero operands; "
              "*underflow*: exactly 0 out of finite non-zero operands, for operators whose exact result cannot be 0; "
              "*error*: the target failed on the test and the message names the operator. See docs/numerics.md.", ""]
    lines += ["## By operator (all targets)", "", "| operator | runs | NaN | Inf | overflow | underflow | error | with an event |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for op, counts in totals.items():
        share = f"{100 * counts['any'] / counts['runs']:.1f}%" if counts["runs"] else "-"
        lines.append(f"| {op} | {counts['runs']} | {counts['nan']} | {counts['inf']} | {counts['overflow']} | "
                     f"{counts['underflow']} | {counts['error']} | {share} |")
    if "by_operator.png" in images:
        lines += ["", "![events by operator](by_operator.png)"]
    lines += ["", "## By target", "", "| operator | target | runs | NaN | Inf | overflow | underflow | error |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for op, total in totals.items():
        if not _weight(total):
            continue
        for target in summary.targets:
            counts = summary.counts.get((op, target))
            if counts:
                lines.append(f"| {op} | `{target}` | {counts['runs']} | {counts['nan']} | {counts['inf']} | "
                             f"{counts['overflow']} | {counts['underflow']} | {counts['error']} |")
    if "heatmap.png" in images:
        lines += ["", "![target x operator](heatmap.png)"]
    lines += ["", "## Where targets disagree", ""]
    if not summary.disagreements:
        lines.append("No node where one target had an event and another, running the same node, did not.")
    else:
        lines += ["Nodes where some targets had the event and others did not; *alone* names the minority side "
                  "(a target that had it when the others did not, or lacked it when the others had it).", "",
                  "| operator | event | nodes | dtypes | alone |", "|---|---|---:|---|---|"]
        for (op, event), number in summary.disagreements.most_common():
            alone = ", ".join(f"`{t}` {'had it' if side == 'with' else 'lacked it'} {n}x"
                              for (o, e, t, side), n in sorted(summary.alone.items()) if (o, e) == (op, event))
            dtypes = ", ".join(f"{d} {n}" for d, n in summary.disagreement_dtypes[(op, event)].most_common())
            lines.append(f"| {op} | {event} | {number} | {dtypes} | {alone} |")
    return "\n".join(lines) + "\n"


def write_report(summary: Summary, out: Path, context: dict[str, Any] | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(summary, out)
    images = plot(summary, out)
    (out / "numerics.md").write_text(markdown(summary, images, context or {}))
    return [out / name for name in ("numerics.csv", "disagreements.csv", "numerics.md", *images)]


# -- command line --------------------------------------------------------------------------------
def numerics_parser():
    from higen.main import OneLineParser

    p = OneLineParser(prog="higen numerics", description="Per-operator NaN/Inf/overflow/underflow/error report of a run.")
    p.add_argument("run_dir", type=Path, help="a run directory (runs/<N>)")
    p.add_argument("--out", type=Path, help="report folder (default RUN_DIR/numerics-report)")
    p.add_argument("--rerun-cases", action="store_true",
                   help="re-run the saved bug cases even when the run recorded numerics.jsonl")
    p.add_argument("--targets", help="comma-separated targets to re-run cases on (default: each case's own)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--memory-limit-mb", type=int, default=8192)
    return p


def build_summary(run_dir: Path, rerun: bool = False, targets: list[str] | None = None,
                  timeout_s: float = 60.0, memory_limit_mb: int = 8192, console=None) -> Summary:
    from higen.main import UserError

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


def command_numerics(argv: list[str]) -> int:
    from rich.console import Console

    args = numerics_parser().parse_args(argv)
    console = Console(stderr=True)
    targets = [t for t in args.targets.split(",") if t] if args.targets else None
    summary = build_summary(args.run_dir, args.rerun_cases, targets, args.timeout, args.memory_limit_mb, console)
    context = {}
    campaign = training_summary(args.run_dir)
    if campaign:
        context["Campaign (training.log)"] = (f"{campaign['tests']} tests, verdicts "
                                              + ", ".join(f"{k} {v}" for k, v in sorted(campaign["verdicts"].items())))
    written = write_report(summary, args.out or args.run_dir / "numerics-report", context)
    console.print(f"{summary.tests} records, {len(summary.op_totals())} operators, "
                  f"{sum(summary.disagreements.values())} disagreeing nodes -> {written[0].parent}")
    return 0
