"""``higen numerics RUN_DIR --out DIR`` (the command is :mod:`higen.cli.numerics`): the instability
report of a run, per operator and target, written from its :class:`higen.numerics.summary.Summary`
(which says where the counts come from).

Writes ``numerics.csv`` (op, target, counts, rates), ``disagreements.csv``, ``numerics.md``,
``by_operator.png`` (stacked bars per operator) and ``heatmap.png`` (target x operator share of
executions with an event).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from higen.numerics.stats import COUNTS, EVENTS
from higen.numerics.summary import Summary, weight

TOP_OPS = 30  # operators shown in the figures: those with events, most first


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
    ops = [op for op, counts in totals.items() if weight(counts)][:TOP_OPS]  # operators with an event
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
        if not weight(total):
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
