"""Learn, once per runtime version, which (operator, input dtypes) each target supports.

One single-operator model per combination runs on every target; the generator then only builds
graphs from combinations that export to ONNX and run everywhere. An unsupported op/dtype is an
invalid test, not a finding, so avoiding it up front keeps the campaign's findings clean. Single
ops that *error or crash* are kept out too, and listed as findings worth a look in ``support.json``.
Results are cached under ``higen.runtimes.cache_root()`` (``$HIGEN_CACHE_DIR``, else
``$XDG_CACHE_HOME/higen``, else ``~/.cache/higen``), keyed by target name and the runtime version the
worker reports (a pinned target, ``ort@1.20.1:cpu:O3``, by the release it really imported).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from higen.backends.pool import BackendPool
from higen.files import write_json_atomic
from higen.generation.client import Generator
from higen.runtimes import cache_root
from higen.tensors import scratch_dir

PROBE_VERSION = 1


def cache_dir() -> Path:
    return cache_root() / "support"


def _cache_path(target: str, info: dict[str, Any], nnsmith_version: str) -> Path:
    build = f"-{info['pipeline']}" if info.get("pipeline") else ""  # what the backend compiles with, if it says
    key = f"{target}-{info.get('runtime')}{info.get('version')}{build}-nnsmith{nnsmith_version}-v{PROBE_VERSION}"
    return cache_dir() / (key.replace(":", "_").replace("/", "_") + ".json")


def probe(generator: Generator, pool: BackendPool, targets: list[str],
          progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, dict[str, str]]]:
    """Run every single-op model on ``targets`` of ``pool``: target -> op -> dtypes -> status."""
    work = scratch_dir("higen-support-")
    try:
        entries = generator.single_op_models(work)
        table: dict[str, dict[str, dict[str, str]]] = {name: {} for name in targets}
        for done, entry in enumerate(entries, 1):
            if entry["status"] == "ok":
                out = Path(entry["model"]).parent
                outcomes = pool.run(Path(entry["model"]), Path(entry["inputs"]), out, only=targets)
                statuses = {name: o.status for name, o in outcomes.items()}
            else:
                statuses = {name: "unexportable" for name in table}
            for name, status in statuses.items():
                table[name].setdefault(entry["op"], {})[entry["in_dtypes"]] = status
            if progress:
                progress(done, len(entries))
        return table
    finally:
        shutil.rmtree(work, ignore_errors=True)


def learn_support(generator: Generator, pool: BackendPool, run_dir: Path,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Load or probe each target's support, write ``run_dir/support.json`` and point the generator
    at the combinations every target runs. Returns the path of that file."""
    nnsmith_version = generator.info.get("nnsmith_version", "?")
    infos = pool.describe()
    paths = {name: _cache_path(name, infos[name], nnsmith_version) for name in infos}
    tables = {name: json.loads(path.read_text()) for name, path in paths.items() if path.exists()}
    missing = [name for name in paths if name not in tables]
    if missing:
        cache_dir().mkdir(parents=True, exist_ok=True)
        for name, table in probe(generator, pool, missing, progress).items():
            write_json_atomic(paths[name], table, indent=1)
            tables[name] = table
    allowed = intersect(tables)
    suspicious = {name: {f"{op} {dtypes}": status for op, combos in table.items()
                         for dtypes, status in combos.items() if status in ("error", "crash", "timeout")}
                  for name, table in tables.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "support.json", {"targets": tables, "single_op_failures": suspicious}, indent=1)
    allowed_path = run_dir / "allowed_ops.json"
    write_json_atomic(allowed_path, allowed, indent=1)
    generator.allowed_path = allowed_path
    return allowed_path


def intersect(tables: dict[str, dict[str, dict[str, str]]]) -> dict[str, list[str]]:
    """op -> dtype combos that run ``ok`` on every target."""
    ops = set.intersection(*(set(t) for t in tables.values())) if tables else set()
    allowed = {}
    for op in sorted(ops):
        combos = set.intersection(*({d for d, s in t[op].items() if s == "ok"} for t in tables.values()))
        if combos:
            allowed[op] = sorted(combos)
    return allowed
