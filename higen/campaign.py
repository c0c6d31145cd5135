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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from higen.engine import Engine, TestResult
from higen.envs.decoder import describe_config
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
    unique_tokens: int = 0  # structure coverage: distinct tokens (op, edge, dtype, rank, attr) seen

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


def report_test(result: TestResult, summary: CampaignSummary, log: RunLog, progress: Progress, **extra) -> None:
    """Log one test and announce its saved bug case, if any (shared by every strategy)."""
    log.write("test", **result.to_json(), free=result.config.extra.get("free", []), **extra)
    if result.case:
        summary.cases.append(result.case)
        progress.console.print(f"[red]finding[/red] {result.verdict} -> bug_cases/{result.case}")


def run_campaign(engine: Engine, strategy: Strategy, total_tests: int, small_epochs: int, log: RunLog,
                 progress: Progress, max_seconds: float | None = None) -> CampaignSummary:
    """Run ``total_tests`` tests (fewer if ``max_seconds`` pass first); a big epoch is ``small_epochs``
    tests (one summary line each)."""
    summary = CampaignSummary()
    began = time.perf_counter()
    task = progress.add_task("fuzzing", total=total_tests, stats="")
    epoch: list[TestResult] = []
    tokens: set[str] = set()
    depth = max(1, engine.depth)  # tests in flight: 1, or a few per pipeline (higen.scale)
    try:
        submitted = 0
        while submitted < min(depth, total_tests):
            engine.submit(strategy.propose())
            submitted += 1
        for done in range(1, total_tests + 1):
            more = submitted < total_tests and not (max_seconds and time.perf_counter() - began >= max_seconds)
            result = engine.finish(prefetch=strategy.propose() if more else None)
            submitted += more
            last = done == submitted
            report_test(result, summary, log, progress)
            tokens.update(result.tokens)
            epoch.append(result)
            if len(epoch) == small_epochs or last:
                log.write("big_epoch", epoch=(done - 1) // small_epochs, **epoch_summary(epoch),
                          unique_tokens=len(tokens))
                epoch = []
            progress.update(task, advance=1, stats=stats_line(engine, began))
            if last:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
        progress.console.print("[yellow]interrupted: bug cases found so far are saved[/yellow]")
    return finish_summary(summary, engine, began, len(tokens))


def run_rl_campaign(trainer, total_tests: int, log: RunLog, progress: Progress) -> CampaignSummary:
    """Run a ``higen.agents.trainer.HierarchicalTrainer`` with the same logging and display as
    ``run_campaign`` (it writes the big-epoch lines and checkpoints itself)."""
    summary = CampaignSummary()
    engine = trainer.engine
    began = time.perf_counter()
    task = progress.add_task("fuzzing (rl)", total=total_tests, completed=trainer.state.tests, stats="")

    def on_test(result: TestResult, terms) -> None:
        report_test(result, summary, log, progress, reward=terms.as_dict())
        progress.update(task, advance=1, stats=stats_line(engine, began))

    trainer.on_test = on_test
    trained = trainer.train()
    if trained.interrupted:
        progress.console.print(f"[yellow]interrupted: bug cases and a checkpoint ({trained.checkpoint}) are saved; "
                               f"continue with --resume[/yellow]")
    summary.interrupted = trained.interrupted
    return finish_summary(summary, engine, began, trained.unique_tokens)


def finish_summary(summary: CampaignSummary, engine: Engine, began: float, unique_tokens: int) -> CampaignSummary:
    summary.tests = engine.tests_done
    summary.wall_s = time.perf_counter() - began
    summary.verdicts = Counter(engine.verdicts)
    summary.unique_signatures = len(engine.signatures)
    summary.unique_tokens = unique_tokens
    return summary


def epoch_summary(results: list[TestResult]) -> dict:
    verdicts = Counter(str(r.verdict) for r in results)
    return {"tests": len(results), "verdicts": dict(verdicts),
            "validity": sum(r.valid for r in results) / len(results),
            "new_signatures": sum(len(r.new_signatures) for r in results),
            "configs": [describe_config(r.config) for r in results]}
