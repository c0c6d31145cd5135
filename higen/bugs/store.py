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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

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
from higen.files import write_json_atomic
from higen.oracle import SEVERITY, Finding, Judgement, Tolerance, Verdict
from higen.tensors import load_tensors
from higen.testcase import TestCase

__all__ = ["BugStore", "SignatureIndex", "RootCauseIndex", "Recorded", "FORMAT_VERSION", "run_root_of", "case_dirs"]

INDEX = "index.json"
SHARED_INDEX = "signatures.json"
CAUSES_INDEX = "root_causes.json"
CASES = "bug_cases"
log = logging.getLogger("higen.bugs")


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


def saved_cases(run_root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path relative to the run root, meta.json) of every readable case of a run root."""
    for directory in case_dirs(run_root):
        try:
            meta = read_meta(directory)
        except CaseError:
            continue
        yield directory.relative_to(run_root).as_posix(), meta


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
        for relative, meta in saved_cases(self.run_root):
            for signature in meta.get("saved_for") or [meta["signature"]]:
                finding = next((f for f in meta["findings"] if f.get("signature") == signature), {})
                entry = index.setdefault(signature, new_entry(finding, 0.0))
                entry["count"] += 1
                entry["cases"].append(relative)
        return index


def new_entry(finding: dict[str, Any], now: float) -> dict[str, Any]:
    return {"verdict": finding.get("verdict", "?"), "targets": list(finding.get("targets", [])), "count": 0,
            "cases": [], "first_seen": now, "last_seen": now, "detail": finding.get("detail", "")[:500]}


def cause_key(finding: Finding) -> str:
    """The finding's root-cause key; a finding that was never identified counts as its own signature."""
    return (finding.root_cause or {}).get("key") or finding.signature


def is_noise(finding: Finding) -> bool:
    return bool((finding.root_cause or {}).get("noise"))


def cause_entry(finding: Finding, now: float) -> dict[str, Any]:
    """A new entry of the root-cause index: the identity's fields, counts, signatures and cases."""
    cause = finding.root_cause or {"key": finding.signature, "id": finding.key}
    fields = ("id", "kind", "blamed", "op", "dtype", "attrs", "method", "noise", "tags")
    return {**{k: cause[k] for k in fields if k in cause}, "noise": bool(cause.get("noise")), "count": 0,
            "signatures": [], "cases": [], "first_seen": now, "last_seen": now, "detail": finding.detail[:500]}


@dataclass
class Recorded:
    """What recording one test's findings changed: the units the campaign counts and rewards."""

    new_signatures: list[str] = field(default_factory=list)
    new_bugs: list[str] = field(default_factory=list)  # credible root causes new to the run root
    new_noise: list[str] = field(default_factory=list)  # root causes of noise new to the run root
    bugs: list[str] = field(default_factory=list)  # the test's credible root causes, new or not
    case: str | None = None


class RootCauseIndex:
    """``<run-root>/root_causes.json``: every root cause of the run root (bugs and noise), with its
    signatures and saved cases. Read and written only under the signature index's lock."""

    def __init__(self, run_root: Path):
        self.run_root = Path(run_root)
        self.path = self.run_root / CAUSES_INDEX

    def load(self) -> dict[str, Any]:
        """The index; a missing or corrupt one is rebuilt from the cases' meta.json."""
        try:
            index = json.loads(self.path.read_text()) if self.path.exists() else None
            if isinstance(index, dict):
                return index
        except (ValueError, UnicodeDecodeError) as error:
            log.warning("%s is corrupt (%s): rebuilding it from the saved cases", self.path, error)
        return self.rebuild()

    def save(self, index: dict[str, Any]) -> None:
        write_json_atomic(self.path, index)

    def rebuild(self) -> dict[str, Any]:
        index: dict[str, Any] = {}
        for relative, meta in saved_cases(self.run_root):
            for data in meta["findings"]:
                finding = finding_from_json(data)
                entry = index.setdefault(cause_key(finding), cause_entry(finding, 0.0))
                entry["count"] += 1
                if finding.signature not in entry["signatures"]:
                    entry["signatures"].append(finding.signature)
                if relative not in entry["cases"] and data.get("signature") in meta.get("saved_for", []):
                    entry["cases"].append(relative)
        return index


def finding_from_json(data: dict[str, Any]) -> Finding:
    names = set(Finding.__dataclass_fields__)
    values = {k: v for k, v in data.items() if k in names}
    return Finding(**{**values, "verdict": Verdict(values["verdict"]), "targets": tuple(values["targets"])})


class BugStore:
    """Saves findings of one session into ``root`` (its ``bug_cases``), deduplicated run-root wide by
    root cause (signatures are counted too). ``write_extras(folder, meta)`` writes a case's
    standalone files; the engine passes one that runs in its analyst worker."""

    def __init__(self, root: Path, examples_per_signature: int = 1, run_root: Path | None = None,
                 write_extras: Callable[[Path, dict[str, Any]], None] = write_case_extras):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.examples_per_signature = max(1, examples_per_signature)
        self.run_root = Path(run_root) if run_root else run_root_of(self.root.parent)
        self.shared = SignatureIndex(self.run_root)
        self.causes = RootCauseIndex(self.run_root)
        self.write_extras = write_extras

    def load_index(self) -> dict[str, Any]:
        """This session's index (``bug_cases/index.json``)."""
        path = self.root / INDEX
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            log.warning("%s is corrupt: starting this session's index afresh", path)
            return {}

    def record(self, test: TestCase, judgement: Judgement, outcomes: dict[str, Outcome],
               metadata: dict[str, Any]) -> Recorded:
        """Count the test's findings by signature and by root cause; save the test as a case when one
        of its root causes still wants an example (``examples_per_signature`` for bugs, one for noise)."""
        with self.shared.locked() as shared:
            causes = self.causes.load()
            for index in (shared, causes):  # a case deleted by hand no longer counts as an example
                for entry in index.values():
                    entry["cases"] = [c for c in entry["cases"] if (self.run_root / c).is_dir()]
            by_key = {cause_key(f): f for f in judgement.findings}
            new_signatures = list(dict.fromkeys(f.signature for f in judgement.findings if f.signature not in shared))
            new_causes = [key for key in by_key if key not in causes]
            wanted = [f for key, f in by_key.items()
                      if len(causes.get(key, {}).get("cases", [])) < self._examples(f)]
            case = self._save_case(test, judgement, outcomes, metadata, wanted) if wanted else None
            now = time.time()
            session = self.load_index()
            for finding in judgement.findings:
                keep = case is not None and finding in wanted
                key = cause_key(finding)
                for index, name in ((shared, self._relative(case)), (session, case)):
                    entry = index.setdefault(finding.signature, new_entry(finding.to_json(), now))
                    entry["count"] += 1
                    entry["last_seen"] = now
                    entry.setdefault("root_causes", [])
                    if key not in entry["root_causes"]:
                        entry["root_causes"].append(key)
                    if keep and name not in entry["cases"]:
                        entry["cases"].append(name)
            for key, finding in by_key.items():
                entry = causes.setdefault(key, cause_entry(finding, now))
                entry["count"] += 1  # once per test
                entry["last_seen"] = now
                if case is not None and finding in wanted:
                    entry["cases"].append(self._relative(case))
            for finding in judgement.findings:
                signatures = causes[cause_key(finding)]["signatures"]
                if finding.signature not in signatures:
                    signatures.append(finding.signature)
            self.causes.save(causes)
            write_json_atomic(self.root / INDEX, session)
        noise = {key for key, f in by_key.items() if is_noise(f)}
        return Recorded(new_signatures, [k for k in new_causes if k not in noise], [k for k in new_causes if k in noise],
                        [k for k in by_key if k not in noise], case)

    def note_reduction(self, key: str, summary: dict[str, Any]) -> str | None:
        """Record a finished background reduction of root cause ``key`` (:mod:`higen.bugs.background`).
        When another root cause of the same kind and blamed side reduced to the same graph form, this
        one is an alias of it (one defect, found through different routes): returns that key."""
        with self.shared.locked():
            causes = self.causes.load()
            entry = causes.get(key)
            if entry is None:
                return None
            entry["reduced"] = {k: summary.get(k) for k in ("reproduced", "nodes_before", "nodes_after", "form",
                                                             "reduced", "seconds", "note") if k in summary}
            form = summary.get("form") if summary.get("reproduced") else None
            for other_key, other in causes.items():
                if form and other_key != key and not other.get("alias_of") and \
                        (other.get("kind"), other.get("blamed")) == (entry.get("kind"), entry.get("blamed")) and \
                        (other.get("reduced") or {}).get("form") == form:
                    entry["alias_of"] = other_key
                    break
            self.causes.save(causes)
        return entry.get("alias_of")

    def _examples(self, finding: Finding) -> int:
        return 1 if is_noise(finding) else self.examples_per_signature

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
            write_meta(staging, meta, self.write_extras)
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
        if finding.verdict not in (Verdict.CRASH, Verdict.ERROR, Verdict.TIMEOUT) and finding.analysis is None:
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
        "root_cause": primary.root_cause,
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


def write_meta(folder: Path, meta: dict[str, Any],
               write_extras: Callable[[Path, dict[str, Any]], None] = write_case_extras) -> None:
    """The last files of a staged case: its standalone extras, then meta.json with the SHA-256 of
    every other file (so a case folder with a meta.json is complete)."""
    write_extras(folder, meta)
    meta["files"] = {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    write_json_atomic(folder / "meta.json", meta)


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

