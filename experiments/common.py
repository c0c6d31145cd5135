"""Small helpers shared by the experiment scripts: tables, CSV files, figures, run logs, the
machine's load and the resident memory of processes. No runtime is imported here."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

RESULTS = Path(__file__).resolve().parent / "results"


def console() -> Console:
    """A console wide enough for the tables, also when the output is a pipe or a file."""
    return Console(width=max(160, Console().width))


def machine_note() -> str:
    """Cores and load average: every timing here depends on them (another campaign may share the CPUs)."""
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def print_table(title: str, rows: list[dict[str, Any]], columns: Iterable[str], out: Console | None = None) -> None:
    table = Table(title=title)
    columns = list(columns)
    for column in columns:
        table.add_column(column, justify="left" if column in ("setting", "strategy", "process", "metric") else "right")
    for row in rows:
        table.add_row(*(Text(cell(row.get(column))) for column in columns))  # never read as markup
    (out or console()).print(table)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Iterable[str] | None = None) -> Path:
    """Rows to CSV; columns default to every key, in first-seen order. Missing cells stay empty."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """``training.log``'s JSON lines; a line cut short by a kill is skipped."""
    events = []
    for line in (Path(run_dir) / "training.log").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def spread(values: Iterable[float]) -> dict[str, float]:
    """Mean, standard deviation (0 for one value), min and max of the finite values."""
    finite = [float(v) for v in values if v is not None and v != "" and math.isfinite(float(v))]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"mean": statistics.mean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
            "min": min(finite), "max": max(finite), "n": len(finite)}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, out: Path, title: str | None = None, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=dpi)
    plt.close(figure)


def rss_mb(pid: int) -> float | None:
    """VmRSS of a process in MiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from each process's parent in /proc/<pid>/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2:].split()[1])  # the name in () may hold spaces
        parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def higen(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m higen.main ARGS`` (a campaign or a subcommand such as ``plot``), output captured;
    a failure ends the experiment with the command's last words."""
    done = subprocess.run([sys.executable, "-m", "higen.main", *args], capture_output=True, text=True, check=False,
                          **kwargs)
    if done.returncode not in (0, 130):
        raise SystemExit(f"higen {' '.join(args[:6])} ... failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done
