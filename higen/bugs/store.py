"""Bug cases on disk: one folder per saved finding, written atomically, deduplicated by signature.

Layout of ``bug_cases/<case>/`` (format version in meta.json; see docs/bug-cases.md):
model.onnx, inputs.npz, outputs/<target>.npz (the reference as ``torch_cpu.npz``), error.log,
meta.json. ``bug_cases/index.json`` maps each signature to its cases and how often it was seen; it
is updated under a file lock, so several campaigns may share one bug store.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from higen.backends.base import REFERENCE, Outcome
from higen.oracle import Judgement
from higen.testcase import TestCase

FORMAT_VERSION = 1
INDEX = "index.json"


def _file_name(target: str) -> str:
    return target.replace(":", "_")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


class BugStore:
    def __init__(self, root: Path, examples_per_signature: int = 1):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.examples_per_signature = max(1, examples_per_signature)

    @contextmanager
    def _locked_index(self) -> Iterator[dict[str, Any]]:
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self.load_index()
            yield index
            write_json_atomic(self.root / INDEX, index)

    def load_index(self) -> dict[str, Any]:
        path = self.root / INDEX
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"{path} is corrupt ({exc}): move it away and HiGen rebuilds a fresh one") from exc

    def record(self, test: TestCase, judgement: Judgement, outcomes: dict[str, Outcome],
               metadata: dict[str, Any]) -> tuple[list[str], str | None]:
        """Count the test's findings; save it as a case when a signature still wants an example.
        Returns (signatures seen for the first time, saved case name or None)."""
        new, wanted = [], False
        with self._locked_index() as index:
            for finding in judgement.findings:
                entry = index.get(finding.signature)
                if entry is None:
                    new.append(finding.signature)
                    wanted = True
                elif len(entry["cases"]) < self.examples_per_signature:
                    wanted = True
            case = self._save_case(test, judgement, outcomes, metadata) if wanted else None
            now = time.time()
            for finding in judgement.findings:
                entry = index.setdefault(finding.signature, {
                    "verdict": str(finding.verdict), "targets": list(finding.targets), "count": 0,
                    "cases": [], "first_seen": now, "detail": finding.detail[:500]})
                entry["count"] += 1
                entry["last_seen"] = now
                if case and len(entry["cases"]) < self.examples_per_signature:
                    entry["cases"].append(case)
        return new, case

    def _save_case(self, test: TestCase, judgement: Judgement, outcomes: dict[str, Outcome],
                   metadata: dict[str, Any]) -> str:
        first = judgement.findings[0]
        name = f"{judgement.verdict}-{first.key}"
        suffix = 0
        while (self.root / (f"{name}-{suffix}" if suffix else name)).exists():
            suffix += 1
        name = f"{name}-{suffix}" if suffix else name
        staging = self.root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "outputs").mkdir(parents=True)
        shutil.copy2(test.model_path, staging / "model.onnx")
        shutil.copy2(test.inputs_path, staging / "inputs.npz")
        shutil.copy2(test.reference_path, staging / "outputs" / f"{_file_name(REFERENCE)}.npz")
        for outcome in outcomes.values():
            if outcome.outputs_path and Path(outcome.outputs_path).exists():
                shutil.copy2(outcome.outputs_path, staging / "outputs" / f"{_file_name(outcome.target)}.npz")
        (staging / "error.log").write_text(error_log(judgement, outcomes))
        targets = sorted({t for f in judgement.findings for t in f.targets if t != REFERENCE})
        meta = {
            "format_version": FORMAT_VERSION,
            "case": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "verdict": str(judgement.verdict),
            "signature": first.signature,
            "findings": [f.to_json() for f in judgement.findings],
            "config": test.config.to_json(),
            "seed": test.config.seed,
            "n_nodes": test.n_nodes,
            "nnsmith_ops": test.nnsmith_ops,
            "tokens": test.tokens,
            "reference_nonfinite": test.reference_nonfinite,
            "outcomes": {name_: o.to_json() for name_, o in outcomes.items()},
            "reproduce": f"higen exec model.onnx --inputs inputs.npz --reference outputs/{_file_name(REFERENCE)}.npz "
                         f"--backends {','.join(targets)}",
            **metadata,
        }
        write_json_atomic(staging / "meta.json", meta)
        os.rename(staging, self.root / name)  # atomic: a case is complete or absent
        return name


def error_log(judgement: Judgement, outcomes: dict[str, Outcome]) -> str:
    parts = [f"verdict: {judgement.verdict}"]
    for finding in judgement.findings:
        parts.append(f"\n== {finding.verdict} on {', '.join(finding.targets)}\n{finding.detail}")
    for outcome in outcomes.values():
        if outcome.status != "ok" and (outcome.message or outcome.log_tail):
            parts.append(f"\n== {outcome.target}: {outcome.status} ({outcome.stage})\n{outcome.message}\n"
                         f"{outcome.log_tail}")
    return "\n".join(parts) + "\n"
