"""A campaign without RL: a strategy proposes configs, the engine runs them, progress is shown.

Generation of the next test overlaps execution of the current one. Every test is booked in the
campaign state the RL uses too (``higen.campaign_state``) and logged to ``training.log`` with its
reward terms; each big epoch writes the same summary line as the RL's (high-level reward terms
included) and a checkpoint. Ctrl-C stops after the current test with everything already found kept
on disk; ``--resume`` continues the run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from higen.campaign_state import CampaignState
from higen.engine import TestResult
from higen.engine_api import FuzzEngine
from higen.generation.client import GENERATOR_TIMEOUT
from higen.generation.decoder import dimension_mask
from higen.run_dir import LogHistory, RunLog
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
    generator_timeouts: int = 0  # tests whose generation overran the limit (this session)
    bugs: int = 0  # credible root causes (the bug store's)
    noise_causes: int = 0

    @property
    def tests_per_s(self) -> float:
        return self.tests / self.wall_s if self.wall_s else 0.0


def stats_line(engine: FuzzEngine, began: float) -> str:
    rate = engine.tests_done / max(time.perf_counter() - began, 1e-9)
    counts = " ".join(f"{k} {v}" for k, v in sorted(engine.verdicts.items()))
    return f"{rate:5.1f} tests/s | {counts} | unique findings {len(engine.signatures)}"


def make_progress(console: Console, enabled: bool = True) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), console=console,
                    disable=not enabled, transient=False)


def report_test(result: TestResult, summary: CampaignSummary, log: RunLog, progress: Progress, **extra) -> None:
    """Log one test (with its whole config, so ``higen regenerate`` rebuilds it) and announce its
    saved bug case, if any (shared by every strategy)."""
    config = {k: v for k, v in result.config.to_json().items() if k != "extra"}
    log.write("test", **result.to_json(), free=result.config.extra.get("free", []), config=config, **extra)
    summary.generator_timeouts += result.reason.startswith(GENERATOR_TIMEOUT)
    if result.case:
        summary.cases.append(result.case)
        progress.console.print(f"[red]finding[/red] {result.verdict} -> bug_cases/{result.case}")


def run_campaign(state: CampaignState, strategy: Strategy, total_tests: int | None, log: RunLog,
                 progress: Progress, history: LogHistory | None = None,
                 checkpoint: Callable[[str, int, dict[str, Any]], Any] | None = None) -> CampaignSummary:
    """Run tests on ``state.engine`` until ``total_tests`` (None: no cap) or the state's time budget;
    a big epoch is ``state.small_epochs`` tests. Each test is booked in ``state`` and logged with its
    reward terms; each big epoch is closed by ``state`` and its record logged, as the RL does.
    ``history``: a resumed run's log, continued (test indices; ``state``, ``strategy`` and the engine
    are already restored). ``checkpoint(reason, tests, strategy_state)`` is called after each big
    epoch and on Ctrl-C with the strategy's state as of that many tests (the strategy runs ahead by
    the tests in flight)."""
    history = history or LogHistory()
    engine = state.engine
    summary = CampaignSummary()
    task = progress.add_task("fuzzing", total=total_tests, completed=history.tests, stats="")
    depth = max(1, engine.depth)  # tests in flight: 1, or a few per pipeline (higen.scale)
    done = submitted = history.last_index
    snapshots: dict[int, dict[str, Any]] = {}  # proposals made -> the strategy's state then

    def propose():
        if checkpoint is not None:
            snapshots[submitted] = strategy.state()
        return strategy.propose()

    def more() -> bool:
        return (total_tests is None or submitted < total_tests) and not state.time_spent()

    def state_after(tests: int) -> dict[str, Any]:
        for stale in [k for k in snapshots if k < tests]:
            del snapshots[stale]
        return snapshots.get(tests) or strategy.state()

    try:
        if not done:  # resumable from the first test on; campaign time starts now
            if checkpoint is not None:
                checkpoint("start", 0, strategy.state())
            state.began = time.perf_counter()
        state.begin_epoch()
        while submitted - done < depth and more():
            engine.submit(propose())
            submitted += 1
        while done < submitted:
            following = propose() if more() else None
            result = engine.finish(prefetch=following)
            submitted += following is not None
            done += 1
            if not state.epoch:  # a big epoch frees what the strategy freed for its first test
                state.free = dimension_mask(result.config.extra.get("free", []))
            terms = state.account(result)
            report_test(result, summary, log, progress, reward=terms.as_dict())
            # the time budget is spent: a test generated ahead is dropped, not run past the budget
            last = done == submitted or state.time_spent()
            if done % state.small_epochs == 0 or last:
                log.write("big_epoch", **state.end_epoch()[1])
                if checkpoint is not None:
                    checkpoint("end" if last else "epoch", done, state_after(done))
                state.begin_epoch()
            progress.update(task, advance=1, stats=stats_line(engine, state.began))
            if last:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
        if checkpoint is not None:
            checkpoint("interrupt", done, state_after(done))
        progress.console.print("[yellow]interrupted: bug cases found so far are saved[/yellow]")
    return finish_summary(summary, engine, state.began, len(state.tokens))


def resume_campaign(state: CampaignState, strategy: Strategy, saved: dict[str, Any], history: LogHistory) -> None:
    """Continue a campaign from its checkpoint (``saved``, its run_state.json) and its log: the
    campaign state and the strategy's as of the checkpoint, then past the tests logged after it (the
    strategy draws their configs again without running them)."""
    state.restore(saved.get("state", {"big_epochs": saved["big_epochs"]}), history)  # older checkpoints: counters
    strategy.restore(saved["strategy"])
    strategy.skip(history.last_index - saved["tests"])


def campaign_checkpointer(run_dir: Path, context: dict[str, Any], state: CampaignState
                          ) -> Callable[[str, int, dict[str, Any]], Path]:
    """``checkpoint`` for ``run_campaign``: ``checkpoints/ckpt-<big epochs>-<tests>/run_state.json`` with
    the command line (for ``--resume``), the tests done, the campaign state (reward weights, budget,
    token memory, counters) and the strategy's state (its RNG included)."""
    from higen.agents.checkpoint import write_checkpoint

    def save(reason: str, tests: int, strategy_state: dict[str, Any]) -> Path:
        return write_checkpoint(run_dir / "checkpoints", f"ckpt-{state.big_epochs:06d}-{tests:09d}", {}, None,
                                {"reason": reason, "context": context, "tests": tests, "big_epochs": state.big_epochs,
                                 **state.checkpoint_data(), "strategy": strategy_state})

    return save


def run_rl_campaign(trainer, total_tests: int | None, log: RunLog, progress: Progress) -> CampaignSummary:
    """Run a ``higen.agents.trainer.HierarchicalTrainer`` with the same logging and display as
    ``run_campaign`` (it writes the big-epoch lines and checkpoints itself)."""
    summary = CampaignSummary()
    engine = trainer.engine
    task = progress.add_task("fuzzing (rl)", total=total_tests, completed=trainer.state.tests, stats="")

    def on_test(result: TestResult, terms) -> None:
        report_test(result, summary, log, progress, reward=terms.as_dict())
        progress.update(task, advance=1, stats=stats_line(engine, trainer.state.began))

    trainer.on_test = on_test
    trained = trainer.train()
    if trained.interrupted:
        progress.console.print(f"[yellow]interrupted: bug cases and a checkpoint ({trained.checkpoint}) are saved; "
                               f"continue with --resume[/yellow]")
    summary.interrupted = trained.interrupted
    # campaign time: train() starts it once the policies are built (a resumed run's continues)
    return finish_summary(summary, engine, trainer.state.began, trained.unique_tokens)


def finish_summary(summary: CampaignSummary, engine: FuzzEngine, began: float, unique_tokens: int) -> CampaignSummary:
    summary.tests = engine.tests_done
    summary.wall_s = time.perf_counter() - began
    summary.verdicts = Counter(engine.verdicts)
    summary.unique_signatures = len(engine.signatures)
    summary.bugs, summary.noise_causes = len(engine.bugs), len(engine.noise)
    summary.unique_tokens = unique_tokens
    return summary

