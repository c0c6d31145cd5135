"""HiGen campaigns against the benchmark: strategies x seeds on each affected release, credited by replay.

Entries are grouped by what a campaign must fuzz: the runtime at the entry's affected release
(``--compiler ort@1.20.1``, normal mode: optimized vs unoptimized build vs PyTorch), with the
injected tier's defects planted through ``PYTHONPATH`` (all of a release's injected defects at once).
Each (group, strategy, seed) is one ``python -m higen.main`` campaign with ``--max-seconds``; every
case it saved is credited with :class:`bugbench.credit.Creditor` against the group's entries, and
the first credited case per entry gives the time (campaign seconds since its start line) and the
tests it took (the test index in ``training.log``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .credit import Creditor
from .entries import Entry
from .replay import INJECTED

#: Strategies ``higen.main --strategy`` offers.
STRATEGIES = ("rl", "random", "nnsmith-default")


@dataclass(frozen=True)
class Group:
    """Entries one campaign fuzzes: one runtime release, and the defects planted into it."""

    runtime: str
    version: str
    defects: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.runtime}@{self.version}" + (f"+{'+'.join(self.defects)}" if self.defects else "")


def groups(entries: list[Entry]) -> dict[Group, list[Entry]]:
    found: dict[Group, list[Entry]] = {}
    for tier in ("real", "injected"):
        members = [e for e in entries if e.tier == tier]
        for runtime, version in sorted({(e.runtime, e.affected) for e in members}):
            chosen = [e for e in members if (e.runtime, e.affected) == (runtime, version)]
            defects = tuple(sorted(e.injected["defect"] for e in chosen if e.injected))
            found[Group(runtime, version, defects)] = chosen
    return found


def campaign(group: Group, strategy: str, seed: int, budget_s: float, run_dir: Path, extra: list[str]) -> None:
    """Run one campaign to its end (``nice``-d: the machine is shared); raises SystemExit when it fails."""
    env = dict(os.environ)
    if group.defects:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(INJECTED), env.get("PYTHONPATH", "")) if p)
        env["HIGEN_BUGBENCH_DEFECT"] = ",".join(group.defects)
    compiler = group.runtime if group.defects else f"{group.runtime}@{group.version}"
    command = ["nice", "-n", "10", sys.executable, "-m", "higen.main", "--strategy", strategy, "--seed", str(seed),
               "--compiler", compiler, "--max-seconds", str(budget_s), "--big-epochs", "1000000",
               "--run-root", str(run_dir), "--no-session-subdir", "--no-progress", *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"campaign {group.name} {strategy} seed {seed} failed ({done.returncode}): "
                         f"{done.stderr.strip()[-1500:]}")


def saved_cases(run_dir: Path) -> list[dict]:
    """(test index, campaign seconds, case folder) of every test that saved a case, in order."""
    events = [json.loads(line) for line in (run_dir / "training.log").read_text().splitlines() if line.strip()]
    start = next(e["time"] for e in events if e["event"] == "start")
    return [{"tests": e["index"], "time_s": e["time"] - start, "case": run_dir / "bug_cases" / e["case"]}
            for e in events if e["event"] == "test" and e.get("case")]


def first_credits(run_dir: Path, entries: list[Entry], creditor: Creditor) -> dict[str, dict]:
    """Entry id -> the first saved case credited to it (tests, time_s, case)."""
    found: dict[str, dict] = {}
    for saved in saved_cases(run_dir):
        for entry in entries:
            if entry.id not in found and saved["case"].is_dir() and creditor.credit(saved["case"], entry).credited:
                found[entry.id] = {**saved, "case": str(saved["case"])}
    return found


def summarize(entries: list[Entry], results: list[dict], seeds: list[int], budget_s: float) -> tuple[list, list]:
    """Per (entry, strategy): found in k of S seeds, median campaign seconds and tests to the first
    credited case. Per strategy, each a mean over seeds with a 95% normal-approximation interval:
    bugs per CPU-hour of campaign (all groups of a seed together), and the restricted mean time to
    a bug (seconds to each entry's first credited case, a bug not found counting the whole budget),
    with its ratio to random's: the issue's "same bugs in half the time" is a ratio of 0.5."""
    per_bug, overall = [], []
    for strategy in sorted({r["strategy"] for r in results}):
        runs = [r for r in results if r["strategy"] == strategy]
        for entry in entries:
            hits = [r["found"][entry.id] for r in runs if entry.id in r["found"]]
            per_bug.append({"entry": entry.id, "strategy": strategy, "found": f"{len(hits)}/{len(seeds)}",
                            "median_s": statistics.median(h["time_s"] for h in hits) if hits else None,
                            "median_tests": statistics.median(h["tests"] for h in hits) if hits else None})
        rates, waits = [], []
        for seed in seeds:
            mine = [r for r in runs if r["seed"] == seed]
            found = {entry_id: hit["time_s"] for r in mine for entry_id, hit in r["found"].items()}
            rates.append(len(found) / (len(mine) * budget_s / 3600) if mine else 0.0)
            waits.append(statistics.fmean(min(found.get(e.id, budget_s), budget_s) for e in entries))
        overall.append({"strategy": strategy, **mean_ci("bugs_per_cpu_hour", rates),
                        **mean_ci("mean_s_to_bug", waits), "seeds": len(rates)})
    baseline = next((row["mean_s_to_bug"] for row in overall if row["strategy"] == "random"), None)
    for row in overall:
        row["vs_random"] = row["mean_s_to_bug"] / baseline if baseline else None
    return per_bug, overall


def mean_ci(name: str, values: list[float]) -> dict:
    """``{name: mean, name_ci95: half-width}`` over seeds (NaN half-width for one seed)."""
    mean = statistics.fmean(values) if values else 0.0
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {name: mean, f"{name}_ci95": half}


def found_over_time(results: list[dict], strategy: str, seed: int, budget_s: float, points: int = 200) -> list[int]:
    """Bugs credited by each campaign second (``points`` steps over the budget), all groups of one
    strategy and seed together: the groups' campaigns run side by side on their own clocks."""
    times = sorted(hit["time_s"] for r in results if r["strategy"] == strategy and r["seed"] == seed
                   for hit in r["found"].values())
    return [sum(t <= budget_s * k / points for t in times) for k in range(points + 1)]


def plot(results: list[dict], seeds: list[int], budget_s: float, out: Path, title: str) -> None:
    """Bugs found over campaign time per strategy: each seed thin, the mean over seeds thick."""
    from common import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    points = 200
    minutes = [budget_s / 60 * k / points for k in range(points + 1)]
    for color, strategy in zip(("C0", "C1", "C2", "C3"), sorted({r["strategy"] for r in results})):
        curves = [found_over_time(results, strategy, seed, budget_s, points) for seed in seeds]
        for curve in curves:
            axis.step(minutes, curve, where="post", color=color, alpha=0.3, linewidth=0.8)
        axis.step(minutes, [statistics.fmean(values) for values in zip(*curves)], where="post", color=color,
                  linewidth=2, label=f"{strategy} (mean of {len(curves)} seeds)")
    axis.set_xlabel("campaign minutes (each group's campaign on its own clock)")
    axis.set_ylabel("benchmark bugs credited by replay")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)
    save_figure(figure, out, title)
