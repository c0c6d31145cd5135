"""A campaign without RL: a strategy proposes configs, the engine runs them, progress is shown.

Generation of the next test overlaps execution of the current one. Every test is logged to
``training.log``; each big epoch writes a summary line. Ctrl-C stops after the current test with
everything already found kept on disk.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from higen.engine import Engine, TestResult
from higen.run_dir import RunLog
from higen.strategies import Strategy


@dataclass
class CampaignSummary:
    tests: int = 0
    wall_s: float = 0.0
    verdicts: Counter = field(default_factory=Counter)
    unique_signatures: int = 0
    cases: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def tests_per_s(self) -> float:
        return self.tests / self.wall_s if self.wall_s else 0.0


def stats_line(engine: Engine, began: float) -> str:
    rate = engine.tests_done / max(time.perf_counter() - began, 1e-9)
    counts = " ".join(f"{k} {v}" for k, v in sorted(engine.verdicts.items()))
    return f"{rate:5.1f} tests/s | {counts} | unique findings {len(engine.signatures)}"


def make_progress(console: Console, enabled: bool = True) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), console=console,
                    disable=not enabled, transient=False)


def run_campaign(engine: Engine, strategy: Strategy, total_tests: int, small_epochs: int, log: RunLog,
                 progress: Progress) -> CampaignSummary:
    """Run ``total_tests`` tests; a big epoch is ``small_epochs`` tests (one summary line each)."""
    summary = CampaignSummary()
    began = time.perf_counter()
    task = progress.add_task("fuzzing", total=total_tests, stats="")
    epoch: list[TestResult] = []
    try:
        engine.submit(strategy.propose())
        for done in range(1, total_tests + 1):
            result = engine.finish(prefetch=strategy.propose() if done < total_tests else None)
            log.write("test", **result.to_json())
            if result.case:
                summary.cases.append(result.case)
                progress.console.print(f"[red]finding[/red] {result.verdict} -> bug_cases/{result.case}")
            epoch.append(result)
            if len(epoch) == small_epochs or done == total_tests:
                log.write("big_epoch", epoch=(done - 1) // small_epochs, **epoch_summary(epoch))
                epoch = []
            progress.update(task, advance=1, stats=stats_line(engine, began))
    except KeyboardInterrupt:
        summary.interrupted = True
        progress.console.print("[yellow]interrupted: bug cases found so far are saved[/yellow]")
    summary.tests = engine.tests_done
    summary.wall_s = time.perf_counter() - began
    summary.verdicts = Counter(engine.verdicts)
    summary.unique_signatures = len(engine.signatures)
    return summary


def epoch_summary(results: list[TestResult]) -> dict:
    verdicts = Counter(str(r.verdict) for r in results)
    return {"tests": len(results), "verdicts": dict(verdicts),
            "validity": sum(r.valid for r in results) / len(results),
            "new_signatures": sum(len(r.new_signatures) for r in results)}
