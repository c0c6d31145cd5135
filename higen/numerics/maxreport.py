"""What ``higen maximize`` writes: per model the error curve (CSV + PNG), the error-propagation table
(CSV), the graph picture and ``report.md``; for the command one ``summary.md``/``summary.csv``
ranked by worst error."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from higen.numerics.maxtrace import draw_graph

TABLE_ROWS = 25


def fmt(error: float | None) -> str:
    """An error in eps units for tables (``inf``: NaN/Inf on one side only)."""
    if error is None or (isinstance(error, float) and math.isnan(error)):
        return "-"
    if math.isinf(error):
        return "inf" if error > 0 else "-"
    return f"{error:.3g}"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def plot_curve(curve: list[dict[str, Any]], path: Path, title: str) -> None:
    """Each evaluation's error (dots) and the best so far (line), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def shown(value: float) -> float:
        return math.nan if not math.isfinite(value) or value <= 0 else value

    x = [row["evaluation"] for row in curve]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.scatter(x, [shown(row["error"]) for row in curve], s=6, color="0.6", label="candidate")
    ax.plot(x, [shown(row["best"]) for row in curve], color="tab:red", label="best so far")
    if any(math.isfinite(shown(row["best"])) for row in curve):
        ax.set_yscale("log")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("error (eps units at the magnitude)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_model_report(result, model, settings) -> Path:
    """Curve, trace table, graph picture and report.md of one model; returns the report's path."""
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# higen maximize: {result.name} on {result.runtime}", "",
             f"Compared: `{result.sides[0]}` (unoptimized) vs `{result.sides[1]}` (optimized).", ""]
    if result.status != "ok":
        lines += [f"**Skipped**: {result.reason}", ""]
        (out / "report.md").write_text("\n".join(lines))
        return out / "report.md"
    search = result.search
    write_csv(out / "curve.csv", search.curve)
    plot_curve(search.curve, out / "curve.png", f"{result.name} ({result.runtime}, {settings.search})")
    ranges = ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in settings.per_input.items())
    lines += [
        f"- inputs in [{settings.low:g}, {settings.high:g}]" + (f"; {ranges}" if ranges else ""),
        f"- search `{settings.search}`, seed {settings.seed}: {search.evaluations} evaluations "
        f"(stopped by {search.stopped}), {result.eval_s * 1000:.1f} ms per evaluation; first compile "
        + ", ".join(f"{k} {v:.2f} s" for k, v in result.compile_s.items()),
        f"- **worst error: {fmt(search.best_error)}** eps units at the magnitude (|a-b| / (eps * max(1, |a|))), "
        f"output `{search.best_output}`; the worst inputs are in `worst_inputs.npz`",
        f"- bug case: `{result.case.relative_to(out)}` (`higen repro`, `higen localize` accept it)" if result.case
        else "- no bug case (no difference found, an OpenVINO run, or the replay did not show it)",
        "", "![error curve](curve.png)", ""]
    if result.failures:
        lines += ["Failures seen:", *(f"- {f}" for f in result.failures), ""]
    if result.trace:
        write_csv(out / "trace.csv", result.trace)
        draw_graph(model, result.trace, out / "graph.png", f"{result.name}: error growth, {result.runtime}")
        lines += trace_section(result)
    if result.localization:
        lines += localization_section(result.localization)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def trace_section(result) -> list[str]:
    where = result.origin
    method = (f"With every intermediate exposed as a graph output the outputs' error is {fmt(result.exposed_error)} "
              f"(not exposed: {fmt(result.error)})")
    if result.trace_method == "prefixes":
        method += (": exposing the tensors stops the fusion that makes the error, so each node's value below "
                   "comes from its own prefix model (the subgraph computing it), compiled and run on both builds.")
    lines = ["## Error propagation on the worst input", "", method + ("." if result.trace_method != "prefixes" else ""),
             "",
             (f"The error is born at **{where['node']}** ({where['op']}, output `{where['output']}`): "
              f"{fmt(where['error'])} from inputs at {fmt(where['input_error'])}." if where else
              "No single node raises the error to a quarter of the final one from smaller inputs."),
             "", "![graph](graph.png)", "",
             "Nodes with the largest growth (all in `trace.csv`):", "",
             "| # | node | op | dtype | error | inputs' error | growth (decades) |", "|---|---|---|---|---|---|---|"]
    top = sorted(result.trace, key=lambda r: -r["growth"] if not math.isnan(r["growth"]) else 0)[:TABLE_ROWS]
    for row in sorted(top, key=lambda r: r["index"]):
        lines.append(f"| {row['index']} | {row['node']} | {row['op']} | {row['dtype']} | {fmt(row['error'])} | "
                     f"{fmt(row['input_error'])} | {row['growth']:+.2f} |")
    return lines + [""]


def localization_section(report: dict[str, Any]) -> list[str]:
    lines = ["## higen localize", "", report.get("answer", "") or "(no answer)", ""]
    for target, search in (report.get("pass_search") or {}).items():
        lines.append(f"- {target}: {search.get('answer', '')} ({search.get('tried', 0)} builds tried)")
    lines += ["", "Full record: `localization.json` in the case folder.", ""]
    return lines


def write_summary(results: list, out: Path, settings) -> list[dict[str, Any]]:
    """``summary.csv`` and ``summary.md``: one row per model and runtime, worst error first."""
    ranked = sorted(results, key=lambda r: (r.status != "ok", -r.error if not math.isnan(r.error) else 0))
    rows = []
    for rank, result in enumerate(ranked, 1):
        localized = result.localization or {}
        node = (localized.get("node") or {}).get("name") or (result.origin or {}).get("node", "")
        passes = [", ".join(s.get("smallest") or []) for s in (localized.get("pass_search") or {}).values()]
        rows.append({"rank": rank, "model": result.name, "runtime": result.runtime, "status": result.status,
                     "worst_error": fmt(result.error) if result.status == "ok" else "-",
                     "output": result.search.best_output if result.search else "",
                     "evaluations": result.search.evaluations if result.search else 0,
                     "ms_per_eval": round(result.eval_s * 1000, 2), "node": node,
                     "pass": "; ".join(p for p in passes if p),
                     "report": str(result.out_dir.relative_to(out) / "report.md"), "reason": result.reason[:200]})
    write_csv(out / "summary.csv", rows)
    lines = ["# higen maximize: summary", "",
             f"Search `{settings.search}`, inputs in [{settings.low:g}, {settings.high:g}], seed {settings.seed}. "
             "Error: |a-b| / (eps * max(1, |a|)) between the unoptimized (a) and optimized (b) build, largest "
             "over elements and outputs; inf: NaN/Inf on one side only.", "",
             "| rank | model | runtime | worst error | output | evals | ms/eval | node | pass | report |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        report = f"[report]({row['report']})" if row["status"] == "ok" else f"skipped: {row['reason']}"
        lines.append(f"| {row['rank']} | {row['model']} | {row['runtime']} | {row['worst_error']} | {row['output']} | "
                     f"{row['evaluations']} | {row['ms_per_eval']} | {row['node']} | {row['pass']} | {report} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    return rows
