"""Run directories: ``<run-root>/<N>/`` numbered per session with a ``LATEST`` file beside them,
and ``training.log``, one JSON object per line (read back by ``read_history`` when a run resumes)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from higen.files import write_text_atomic


def create_run_dir(run_root: Path, session_subdir: bool = True) -> Path:
    """Make the next numbered session directory (or use ``run_root`` itself) and update LATEST."""
    run_root = Path(run_root)
    run_root.mkdir(parents=True, exist_ok=True)
    if not session_subdir:
        return run_root
    while True:
        numbers = [int(p.name) for p in run_root.iterdir() if p.is_dir() and p.name.isdigit()]
        run_dir = run_root / str(max(numbers, default=0) + 1)
        try:
            run_dir.mkdir()
            break
        except FileExistsError:  # another campaign took that number first
            continue
    write_text_atomic(run_root / "LATEST", run_dir.name + "\n")
    return run_dir


class RunLog:
    """Appends JSON lines to ``training.log``; each line is flushed so a killed run loses nothing."""

    def __init__(self, path: Path):
        self.handle = open(path, "a", buffering=1)

    def write(self, event: str, **fields: Any) -> None:
        self.handle.write(json.dumps({"event": event, "time": time.time(), **fields}, default=str) + "\n")

    def close(self) -> None:
        self.handle.close()


@dataclass
class LogHistory:
    """What the sessions of a run logged so far: the resumed run continues from it (test indices,
    engine counters, campaign time), whatever its last checkpoint holds."""

    tests: int = 0  # test lines
    last_index: int = 0  # the highest test index logged
    verdicts: Counter = field(default_factory=Counter)
    signatures: set[str] = field(default_factory=set)
    noise: set[str] = field(default_factory=set)  # root causes of noise (keys)
    bug_hits: Counter = field(default_factory=Counter)  # credible root cause -> tests that hit it
    big_epochs: int = 0  # big_epoch lines
    elapsed_s: float = 0.0  # campaign time: per session, from its start/resume line to its last line

    @property
    def bugs(self) -> set[str]:
        """Credible root causes (keys) the run found."""
        return set(self.bug_hits)


def read_history(path: Path) -> LogHistory:
    """Read ``training.log``; a last line cut by a kill is removed from the file first (it was never
    complete, and a resumed run appends after it)."""
    history = LogHistory()
    if not path.is_file():
        return history
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with open(path, "r+b") as handle:
            handle.truncate(len(raw))
    session: list[float] = []  # (first, last) times of the current session
    for line in raw.decode().splitlines():
        event = json.loads(line)
        if event["event"] in ("start", "resume"):
            history.elapsed_s += session[1] - session[0] if session else 0.0
            session = [event["time"], event["time"]]
            continue
        if session:
            session[1] = event["time"]
        if event["event"] == "test":
            history.tests += 1
            history.last_index = max(history.last_index, int(event["index"]))
            history.verdicts[event["verdict"]] += 1
            history.signatures.update(event.get("findings", ()))
            credible = set()
            for key, noisy in zip(event.get("root_causes", ()), event.get("noise", ())):
                (history.noise if noisy else credible).add(key)
            history.bug_hits.update(credible)
        elif event["event"] == "big_epoch":
            history.big_epochs += 1
    history.elapsed_s += session[1] - session[0] if session else 0.0
    return history
