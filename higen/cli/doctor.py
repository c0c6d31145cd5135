"""``higen doctor``: each backend, its version and the devices it sees; the other releases in the
runtime cache (``higen runtimes``) and whether they import; coverage tools too."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from higen.doctor import PROBES, probe, tool_version
from higen.modes import gpu_present
from higen.runtimes import describe_installed, runtimes_dir


def command_doctor(argv: list[str]) -> int:
    console = Console()
    table = Table("component", "version", "devices / note")
    healthy = True
    for name, code in PROBES.items():
        result = probe(name, code)
        if "error" in result:
            healthy = False
            table.add_row(name, "[red]missing[/red]", result["error"][:120])
        else:
            table.add_row(name, result["version"], ", ".join(result["devices"]))
    for row in describe_installed():  # not counted against health: a campaign only uses what it names
        note = "imports" if row["imports"] else f"[red]does not import: {row['problem'][:100]}[/red]"
        table.add_row(f"{row['distribution']} (cache)", row["version"], f"target {row['target']}; {note}")
    table.add_row("runtime cache", "", str(runtimes_dir()))
    for tool in ("gcc", "gcov", "gcovr"):
        table.add_row(tool, tool_version(tool), "coverage of instrumented builds")
    table.add_row("GPU", "present" if gpu_present() else "absent", "GPU targets run only when present")
    console.print(table)
    return 0 if healthy else 1
