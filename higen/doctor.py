"""What ``higen doctor`` checks (the command is :mod:`higen.cli.doctor`): each backend, its version and
the devices it sees, and the coverage tools.

Every runtime is probed in a child process so a broken install cannot take the doctor down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

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
