"""``higen plot RUN_DIR [RUN_DIR ...] --out curves.png``: coverage and unique findings of several runs
on one figure (e.g. RL against random), over tests and over time.

Reads each run's ``coverage_by_steps.csv`` (one row per test; empty cells = not measured, skipped)
and ``training.log`` (``start``/``test``/``end`` JSON lines; a test's ``new`` counts its new
signatures). One row of panels per collector (left: over tests, right: over time), then one for
unique signatures. A run directory may also be a run root holding ``LATEST``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

CSV_NAME = "coverage_by_steps.csv"
LOG_NAME = "training.log"
BUGS = "bugs (credible root causes)"
SIGNATURES = "unique signatures"  # symptoms: shown, never the headline


@dataclass
class RunData:
    label: str
    start: float | None = None
    series: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)  # name -> (step, time, value)
    totals: dict[str, float] = field(default_factory=dict)  # name -> latest known total
    signatures: list[tuple[int, float, int]] = field(default_factory=list)  # (index, time, cumulative unique)
    bugs: list[tuple[int, float, int]] = field(default_factory=list)  # (index, time, cumulative credible root causes)

    def counted(self, panel: str) -> list[tuple[int, float, int]]:
        """The points of a count panel (bugs, signatures); coverage panels are in ``series``."""
        return {BUGS: self.bugs, SIGNATURES: self.signatures}.get(panel, [])


def resolve_run(path: Path) -> Path:
    if not (path / CSV_NAME).exists() and not (path / LOG_NAME).exists() and (path / "LATEST").exists():
        return path / (path / "LATEST").read_text().strip()
    return path


def load_run(path: Path, label: str) -> RunData:
    run = RunData(label)
    log = path / LOG_NAME
    if log.exists():
        total = bugs = 0
        for line in log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if event.get("event") == "start" and run.start is None:
                run.start = event.get("time")
            elif event.get("event") == "test" and "index" in event:
                total += int(event.get("new") or 0)
                run.signatures.append((int(event["index"]), float(event.get("time", math.nan)), total))
                if "new_bugs" in event:  # logs written before root causes have signatures only
                    bugs += len(event["new_bugs"])
                    run.bugs.append((int(event["index"]), float(event.get("time", math.nan)), bugs))
    table = path / CSV_NAME
    if table.exists():
        with open(table, newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda r: int(r["step"]))
        for row in rows:
            step, when = int(row["step"]), float(row["time"])
            for column, text in row.items():
                if text in ("", None) or column in ("step", "time"):
                    continue
                if column.endswith("_covered") and not column.startswith("gcovr_"):
                    run.series.setdefault(column[: -len("_covered")], []).append((step, when, float(text)))
                elif column.startswith("gcovr_") and column.endswith("_branch_covered"):
                    name = "gcov_" + column[len("gcovr_"): -len("_branch_covered")] + " (gcovr)"
                    run.series.setdefault(name, []).append((step, when, float(text)))
                elif column.endswith("_total") and column.startswith("gcov_"):
                    run.totals[column[: -len("_total")]] = float(text)
        if run.start is None and rows:
            run.start = float(rows[0]["time"])
    if run.start is None and run.signatures:
        run.start = run.signatures[0][1]
    return run


def plot_runs(runs: list[RunData], out: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for run in runs:
        names.extend(n for n in run.series if n not in names and not n.endswith(" (gcovr)"))
    panels = ([BUGS] if any(r.bugs for r in runs) else []) + names + [SIGNATURES]
    span = max([(p[1] - r.start) for r in runs if r.start for s in r.series.values() for p in s] +
               [(p[1] - r.start) for r in runs if r.start for p in r.signatures if not math.isnan(p[1])] + [1.0])
    scale, unit = (3600.0, "h") if span > 3 * 3600 else (60.0, "min") if span > 600 else (1.0, "s")
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(len(panels), 2, figsize=(12, 2.8 * len(panels) + 0.9), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, panel in enumerate(panels):
        by_tests, by_time = axes[row]
        for index, run in enumerate(runs):
            color = colors[index % len(colors)]
            points = run.counted(panel) or run.series.get(panel, [])
            if points:
                by_tests.plot([p[0] for p in points], [p[2] for p in points], color=color, label=run.label)
                if run.start is not None:
                    by_time.plot([(p[1] - run.start) / scale for p in points], [p[2] for p in points], color=color,
                                 label=run.label)
            sampled = run.series.get(f"{panel} (gcovr)", [])
            if sampled:  # gcovr's own count at its samples (its measure, not the curve's; docs/coverage.md)
                by_tests.plot([p[0] for p in sampled], [p[2] for p in sampled], "o", color=color, markersize=4)
                if run.start is not None:
                    by_time.plot([(p[1] - run.start) / scale for p in sampled], [p[2] for p in sampled], "o",
                                 color=color, markersize=4)
        totals = sorted({int(r.totals[panel]) for r in runs if panel in r.totals})
        heading = panel if panel in (BUGS, SIGNATURES) else f"{panel}: features covered"
        if totals:
            heading += f"; dots: gcovr's count, of {', '.join(map(str, totals))} branches"
        for axis in (by_tests, by_time):
            axis.set_title(heading, fontsize=10)
            axis.grid(alpha=0.3)
            axis.yaxis.set_major_locator(MaxNLocator(integer=True))
            axis.ticklabel_format(axis="y", style="plain", useOffset=False)
            if panel in (BUGS, SIGNATURES):
                axis.set_ylim(bottom=0, top=max(1, axis.get_ylim()[1]))
        by_tests.set_xlabel("tests")
        by_time.set_xlabel(f"time since start ({unit})")
        by_time.set_xlim(left=0)
    height = 2.8 * len(panels) + 0.9
    handles, labels = [], []
    for axis in axes[:, 0]:
        handles, labels = axis.get_legend_handles_labels()
        if handles:
            break
    if title:
        figure.suptitle(title, y=1 - 0.12 / height, fontsize=12, va="top")
    if handles:
        figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1 - (0.45 if title else 0.1) / height),
                      ncol=min(len(labels), 6), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - (0.75 if title else 0.4) / height))
    figure.savefig(out, dpi=110)
    plt.close(figure)
