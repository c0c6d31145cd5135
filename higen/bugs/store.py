"""Bug cases on disk: one folder per saved finding, written atomically, deduplicated by signature.

Layout (docs/bug-cases.md is the reference; ``format_version`` in meta.json):

- ``<session>/bug_cases/<case>/``: model.onnx, inputs.npz, outputs/<target>.npz (the PyTorch reference
  as ``torch_cpu.npz``), error.log, meta.json, repro.py (standalone: numpy, onnx and the runtimes
  only), model_folded.onnx (what TVM's frontend is given, only for cases with a TVM target).
- ``<run-root>/signatures.json``: every signature seen by any session of the run root, how often,
  and its saved cases as paths relative to the run root. Shared by the sessions ``<run-root>/1``,
  ``2``, ... and by concurrent campaigns: read and written only under ``<run-root>/.signatures.lock``.
  A signature already there is counted, not saved again, once it has ``examples_per_signature`` cases.
- ``<session>/bug_cases/index.json``: the same, restricted to this session (case names only).

A case folder is staged as ``bug_cases/.tmp-<case>-<pid>`` and renamed into place: it is complete
or absent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx

from higen import __version__
from higen.backends.base import REFERENCE, Outcome
from higen.bugs.analysis import analyze_mismatch, nonfinite
from higen.bugs.case import (
    FORMAT_VERSION,
    REFERENCE_FILE,
    CaseError,
    file_name,
    load_outputs,
    read_meta,
)
from higen.bugs.standalone import write_case_extras
from higen.oracle import SEVERITY, Finding, Judgement, Tolerance, Verdict
from higen.tensors import load_tensors
from higen.testcase import TestCase

__all__ = ["BugStore", "SignatureIndex", "FORMAT_VERSION", "run_root_of", "case_dirs"]

INDEX = "index.json"
SHARED_INDEX = "signatures.json"
CASES = "bug_cases"
log = logging.getLogger("higen.bugs")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_root_of(session_dir: Path) -> Path:
    """The run root of a session: ``<root>`` for a numbered session ``<root>/<N>`` (``LATEST`` beside
    it), else the session folder itself (``--no-session-subdir``)."""
    session_dir = Path(session_dir)
    if session_dir.name.isdigit() and (session_dir.parent / "LATEST").is_file():
        return session_dir.parent
    return session_dir


def case_dirs(run_root: Path) -> Iterator[Path]:
    """Every entry of every ``bug_cases`` folder of a run root (sessions and flat), staging ones too."""
    run_root = Path(run_root)
    if not run_root.is_dir():
        return
    sessions = sorted((p for p in run_root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for folder in [run_root / CASES, *(p / CASES for p in sessions)]:
        if folder.is_dir():
            yield from sorted(p for p in folder.iterdir() if p.is_dir())


class SignatureIndex:
    """``<run-root>/signatures.json``: the run root's signatures, shared by its sessions."""

    def __init__(self, run_root: Path):
        self.run_root = Path(run_root)
        self.path = self.run_root / SHARED_INDEX

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The index for read-modify-write; written back atomically when the block ends normally."""
        self.run_root.mkdir(parents=True, exist_ok=True)
        with open(self.run_root / ".signatures.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index = self.load(repair=True)
                yield index
                write_json_atomic(self.path, index)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self, repair: bool = False) -> dict[str, Any]:
        """The index; a missing or corrupt file is rebuilt from the case folders (with ``repair``, a
        corrupt one is moved aside). A missing one is normal: a fresh run root, or sessions saved
        before the index was shared (their cases then count)."""
        if not self.path.exists():
            return self.rebuild()
        try:
            index = json.loads(self.path.read_text())
            if isinstance(index, dict):
                return index
            raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as error:
            log.warning("%s is corrupt (%s): rebuilding it from the saved cases", self.path, error)
            if repair:
                os.replace(self.path, self.path.with_name(f"{SHARED_INDEX}.corrupt-{int(time.time())}"))
            return self.rebuild()

    def rebuild(self) -> dict[str, Any]:
        """An index made from the cases on disk (counts are then the number of saved cases)."""
        index: dict[str, Any] = {}
        for directory in case_dirs(self.run_root):
            try:
                meta = read_meta(directory)
            except CaseError:
                continue
            relative = directory.relative_to(self.run_root).as_posix()
            for signature in meta.get("saved_for") or [meta["signature"]]:
                finding = next((f for f in meta["findings"] if f.get("signature") == signature), {})
                entry = index.setdefault(signature, new_entry(finding, 0.0))
                entry["count"] += 1
                entry["cases"].append(relative)
        return index


def new_entry(finding: dict[str, Any], now: float) -> dict[str, Any]:
    return {"verdict": finding.get("verdict", "?"), "targets": list(finding.get("targets", [])), "count": 0,
            "cases": [], "first_seen": now, "last_seen": now, "detail": finding.get("detail", "")[:500]}


class BugStore:
    """Saves findings of one session into ``root`` (its ``bug_cases``), deduplicated run-root wide."""

    def __init__(self, root: Path, examples_per_signature: int = 1, run_root: Path | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.examples_per_signature = max(1, examples_per_signature)
        self.run_root = Path(run_root) if run_root else run_root_of(self.root.parent)
        self.shared = SignatureIndex(self.run_root)

    def load_index(self) -> dict[str, Any]:
        """This session's index (``bug_cases/index.json``)."""
        path = self.root / INDEX
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            log.warning("%s is corrupt: starting this session's index afresh", path)
            return {}

    def record(self, test: TestCase, judgement: Judgement, outcomes: dict[str, Outcome],
               metadata: dict[str, Any]) -> tuple[list[str], str | None]:
        """Count the test's findings; save it as a case when a signature still wants an example.
        Returns (signatures new to the run root, saved case name or None)."""
        with self.shared.locked() as shared:
            for entry in shared.values():  # a case deleted by hand no longer counts as an example
                entry["cases"] = [c for c in entry["cases"] if (self.run_root / c).is_dir()]
            new = [f.signature for f in judgement.findings if f.signature not in shared]
            wanted = [f for f in judgement.findings
                      if len(shared.get(f.signature, {}).get("cases", [])) < self.examples_per_signature]
            case = self._save_case(test, judgement, outcomes, metadata, wanted) if wanted else None
            now = time.time()
            session = self.load_index()
            for finding in judgement.findings:
                keep = case is not None and finding in wanted
                for index, name in ((shared, self._relative(case)), (session, case)):
                    entry = index.setdefault(finding.signature, new_entry(finding.to_json(), now))
                    entry["count"] += 1
                    entry["last_seen"] = now
                    if keep and name not in entry["cases"]:
                        entry["cases"].append(name)
            write_json_atomic(self.root / INDEX, session)
        return new, case

    def _relative(self, case: str | None) -> str | None:
        return (self.root / case).relative_to(self.run_root).as_posix() if case else None

    def _save_case(self, test: TestCase, judgement: Judgement, outcomes: dict[str, Outcome],
                   metadata: dict[str, Any], wanted: list[Finding]) -> str:
        primary = min(wanted, key=lambda f: SEVERITY.index(f.verdict))
        name = f"{judgement.verdict}-{primary.key}"
        suffix = 0
        while (self.root / (f"{name}-{suffix}" if suffix else name)).exists():
            suffix += 1
        name = f"{name}-{suffix}" if suffix else name
        staging = self.root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            (staging / "outputs").mkdir(parents=True)
            shutil.copy2(test.model_path, staging / "model.onnx")
            shutil.copy2(test.inputs_path, staging / "inputs.npz")
            shutil.copy2(test.reference_path, staging / REFERENCE_FILE)
            for outcome in outcomes.values():
                if outcome.outputs_path and Path(outcome.outputs_path).exists():
                    shutil.copy2(outcome.outputs_path, staging / "outputs" / f"{file_name(outcome.target)}.npz")
            (staging / "error.log").write_text(error_log(judgement, outcomes))
            meta = case_meta(name, staging, test, judgement, outcomes, metadata, primary, wanted)
            write_case_extras(staging, meta)
            meta["files"] = {p.relative_to(staging).as_posix(): sha256(p)
                             for p in sorted(staging.rglob("*")) if p.is_file()}
            write_json_atomic(staging / "meta.json", meta)
            os.rename(staging, self.root / name)  # atomic: a case is complete or absent
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return name


def case_meta(name: str, staging: Path, test: TestCase, judgement: Judgement, outcomes: dict[str, Outcome],
              metadata: dict[str, Any], primary: Finding, wanted: list[Finding]) -> dict[str, Any]:
    """meta.json of a new case (docs/bug-cases.md lists every key)."""
    versions = metadata.get("versions") or {"higen": __version__}
    descriptions = versions.get("targets", {})
    oracle = metadata.get("oracle", {})
    model = onnx.load(str(staging / "model.onnx"))
    inputs = load_tensors(staging / "inputs.npz")
    outputs = load_outputs(staging, {"targets": list(outcomes)})
    tolerances = {dtype: Tolerance(**tol) for dtype, tol in oracle.get("tolerances", {}).items()}
    findings = []
    for finding in judgement.findings:
        data = finding.to_json()
        if finding.verdict not in (Verdict.CRASH, Verdict.ERROR, Verdict.TIMEOUT):
            data["analysis"] = analyze_mismatch(data, outputs, model, tolerances, descriptions, inputs)
        findings.append(data)
    targets = list(outcomes)
    blamed = sorted({t for f in judgement.findings for t in f.targets if t != REFERENCE})
    return {
        "format_version": FORMAT_VERSION,
        "case": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "verdict": str(judgement.verdict),
        "signature": primary.signature,
        "saved_for": [f.signature for f in wanted],
        "findings": findings,
        "targets": targets,
        "reference": REFERENCE,
        "reference_file": REFERENCE_FILE,
        "config": test.config.to_json(),
        "seed": test.config.seed,
        "n_nodes": test.n_nodes,
        "onnx_nodes": len(model.graph.node),
        "op_types": sorted({node.op_type for node in model.graph.node}),
        "nnsmith_ops": test.nnsmith_ops,
        "tokens": test.tokens,
        "reference_nonfinite": test.reference_nonfinite,
        "inputs_nonfinite": nonfinite(inputs),
        "outcomes": {target: outcome_json(o) for target, o in outcomes.items()},
        "timings": {"gen_s": test.gen_s, **{target: {"compile_s": o.compile_s, "run_s": o.run_s, "wall_s": o.wall_s}
                                            for target, o in outcomes.items()}},
        "environment": {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
                        "platform": platform.platform()},
        "reproduce": f"higen exec model.onnx --inputs inputs.npz --reference {REFERENCE_FILE} "
                     f"--backends {','.join(blamed)}",
        "replay": "higen repro .",
        "standalone": "python repro.py",
        **metadata,
        "versions": versions,
        "oracle": {"pairs": [list(p) for p in oracle.get("pairs", [])],
                   "nan_policy": oracle.get("nan_policy", "skip-unstable"),
                   "tolerances": oracle.get("tolerances", {})},
    }


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """An outcome for meta.json, without bulky per-test coverage payloads (see higen.coverage)."""
    data = outcome.to_json()
    data["extra"] = {k: v for k, v in data.get("extra", {}).items() if k != "coverage"}
    return data


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def error_log(judgement: Judgement, outcomes: dict[str, Outcome]) -> str:
    parts = [f"verdict: {judgement.verdict}"]
    for finding in judgement.findings:
        parts.append(f"\n== {finding.verdict} on {', '.join(finding.targets)}\n{finding.detail}")
    for outcome in outcomes.values():
        if outcome.status != "ok" and (outcome.message or outcome.log_tail):
            parts.append(f"\n== {outcome.target}: {outcome.status} ({outcome.stage})\n{outcome.message}\n"
                         f"{outcome.log_tail}")
    return "\n".join(parts) + "\n"

