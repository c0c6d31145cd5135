"""``higen doctor``: each backend, its version and the devices it sees; the other releases in the
runtime cache (``higen runtimes``) and whether they import; coverage tools too.

Every runtime is probed in a child process so a broken install cannot take the doctor down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from rich.console import Console
from rich.table import Table

from higen.modes import gpu_present
from higen.runtimes import describe_installed, runtimes_dir

PROBES = {
    "onnxruntime": "import onnxruntime as m; r = {'version': m.__version__, 'devices': m.get_available_providers()}",
    "tvm": "import tvm as m; r = {'version': m.__version__, 'devices': ['llvm'] + (['cuda'] if m.cuda(0).exist else [])}",
    "openvino": "import openvino as m; r = {'version': m.__version__, 'devices': m.Core().available_devices}",
    "torch": "import torch as m; r = {'version': m.__version__, 'devices': ['cpu'] + (['cuda'] if m.cuda.is_available() else [])}",
    "nnsmith": "import nnsmith as m; r = {'version': m.__version__, 'devices': []}",
}


def probe(name: str, code: str) -> dict:
    script = f"import json\n{code}\nprint(json.dumps(r))"
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"error": "import timed out"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def tool_version(tool: str) -> str:
    if shutil.which(tool) is None:
        return "not found"
    done = subprocess.run([tool, "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


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
