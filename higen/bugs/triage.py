"""``higen triage RUN_OR_BUG_CASES_DIR``: rank the signatures of saved bug cases, most worth a look first.

Everything comes from the cases' meta.json (the analysis the store recorded when saving) and from the
signature indexes; logs are never parsed. A folder that is not a readable case (no or invalid
meta.json, a ``.tmp-*`` staging folder) is reported in one line and skipped. The score (0-100):

- crash 100, error 90, timeout 80 (an error whose message reads "not implemented/unsupported" 25);
  shape/dtype mismatch 70, NaN/Inf mismatch 55;
- value mismatch 40 + 5 per decade of its error in units of the dtype's eps (at most 70);
- then, for any mismatch: inputs (or the inputs of its reduced graph) holding NaN/Inf -25, non-finite
  values in the outputs -10, the other targets agreeing with the blamed one against PyTorch (the
  reference is the odd one out) -15, noise patterns (a float16 rounding flip, a float32 value cast up
  to float64) at most 15, known semantic differences (OpenVINO CPU's uint8 saturation, int64 and
  float64 computed narrower) at most 5. docs/bug-cases.md lists the tags.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from higen.backends.base import REFERENCE
from higen.bugs.analysis import analyze_mismatch, looks_unsupported
from higen.bugs.case import CaseError, load_outputs, read_meta, refuse_pickles
from higen.bugs.store import CASES, INDEX, RootCauseIndex, SignatureIndex, case_dirs, log
from higen.oracle import Tolerance
from higen.tensors import load_tensors

FAILURES = ("crash", "error", "timeout")
#: Parts of a normalized error line that say nothing about the bug (runtime prefixes, placeholders).
BOILERPLATE = re.compile(r"\[ONNXRuntimeError\] : N : \w+ : |Exception during initialization: |\b(SRC|PATH|ADDR)\b ?")
BASE = {"crash": 100.0, "error": 90.0, "timeout": 80.0, "shape_mismatch": 70.0, "dtype_mismatch": 70.0,
        "nan_inf_mismatch": 55.0}


@dataclass
class Ranked:
    """One root cause with its signatures and its best example first."""

    key: str
    id: str
    verdict: str
    targets: list[str]
    score: float
    where: str
    count: int
    signatures: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    noise: bool = False
    reduced: str = ""
    analysis: dict[str, Any] = field(default_factory=dict)
    root_cause: dict[str, Any] = field(default_factory=dict)


def discover(path: Path) -> list[Path]:
    """Case folders under a run root, a session, a ``bug_cases`` folder, or one case folder."""
    if (path / "meta.json").is_file():
        return [path]
    if (path / CASES).is_dir() or any(p.name.isdigit() and p.is_dir() for p in path.iterdir()):
        return list(case_dirs(path))
    return sorted(p for p in path.iterdir() if p.is_dir())


def counts(path: Path, directories: list[Path]) -> dict[str, int]:
    """How often each signature was seen: the run root's shared index, else the sessions' indexes."""
    shared = SignatureIndex(path)
    if shared.path.is_file():
        return {sig: entry.get("count", 0) for sig, entry in shared.load().items()}
    seen: dict[str, int] = {}
    for folder in {d.parent for d in directories}:
        index = folder / INDEX
        try:
            entries = json.loads(index.read_text()) if index.is_file() else {}
        except ValueError:
            log.warning("%s is corrupt: counting saved cases instead", index)
            continue
        for sig, entry in entries.items():
            seen[sig] = seen.get(sig, 0) + entry.get("count", 0)
    return seen


def score(finding: dict[str, Any], meta: dict[str, Any],
          reduced: dict[str, Any] | None = None) -> tuple[float, list[str]]:
    """The finding's score and tags; ``reduced`` is the meta of its reduction, if any."""
    verdict = finding["verdict"]
    tags: list[str] = []
    if verdict in FAILURES:
        outcome = meta.get("outcomes", {}).get(finding["targets"][-1], {})
        if verdict == "error" and looks_unsupported(outcome.get("message", "")):
            return 25.0, ["looks-unsupported"]
        return BASE[verdict], tags
    analysis = dict(finding.get("analysis") or {})
    for mine in (reduced or {}).get("findings", []):  # the reduced graph may show a pattern more plainly
        if mine.get("signature") == finding["signature"]:
            for key in ("noise", "known"):
                analysis.setdefault(key, (mine.get("analysis") or {}).get(key))
    value = BASE.get(verdict) or 40.0 + min(30.0, 5.0 * math.log10(max(analysis.get("error_eps", 1.0), 1.0)))
    if meta.get("inputs_nonfinite") or (reduced or {}).get("inputs_nonfinite"):
        value -= 25  # (the reduced graph's inputs are intermediate values of the original)
        tags.append("inputs-nonfinite")
    if analysis.get("both_finite") is False:
        value -= 10
        tags.append("nonfinite-outputs")
    if finding["targets"][0] == REFERENCE and analysis.get("agreeing_targets"):
        value -= 15
        tags.append("reference-suspect")
    if analysis.get("noise"):
        value = min(value, 15.0)
        tags.append(f"noise:{analysis['noise']}")
    if analysis.get("known"):
        value = min(value, 5.0)
        tags.append(f"known:{analysis['known']}")
    return max(value, 0.0), tags


def where(finding: dict[str, Any], meta: dict[str, Any]) -> str:
    """A short description: the failing line, or the diverging op with its feeders and error size."""
    if finding["verdict"] in FAILURES:
        parts = finding["signature"].split("|", 4)
        what = " ".join(p for p in parts[2:4] if p)  # stage and exception type or signal
        return f"{what}: {BOILERPLATE.sub('', parts[-1]).strip()}"[:160]
    analysis = finding.get("analysis") or {}
    node = (finding.get("root_cause") or {}).get("node")
    producer = analysis.get("producer") or {}
    text = f"{producer.get('op', '?')}({', '.join(producer.get('inputs', []))})" if producer else finding.get("output", "")
    if "dtype" in analysis:
        text += f" {analysis['dtype']}"
    if analysis.get("error_eps"):
        text += f", {analysis['error_eps']:.3g} eps"
    if "bad_fraction" in analysis:
        text += f", {analysis['bad_fraction']:.2%} off"
    return f"node {node}, seen at output {text}" if node else text


def reduced_meta(directory: Path, signature: str) -> dict[str, Any]:
    """meta.json of ``higen reduce``'s result for this signature ({} when there is none)."""
    try:
        reduced = read_meta(directory / "reduced")
    except CaseError:
        return {}
    return reduced if signature in (reduced["signature"], reduced.get("original_signature")) else {}


def case_ops(meta: dict[str, Any], reduced: dict[str, Any]) -> set[str]:
    """Op types of the case's graph (of the reduced graph when there is one), NNSmith names too."""
    if reduced:
        return set(reduced.get("op_types", []))
    ops = set(meta.get("op_types") or (t[3:] for t in meta.get("tokens", []) if t.startswith("op:")))
    return ops | set(meta.get("nnsmith_ops", []))


def recompute(directory: Path, meta: dict[str, Any], finding: dict[str, Any], warn) -> dict[str, Any]:
    """The analysis of a mismatch saved without one (format 1), from the case's tensors."""
    try:
        refuse_pickles(directory)
        model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
        outputs = load_outputs(directory, meta)
        inputs = load_tensors(directory / "inputs.npz")
    except Exception as error:  # best effort: the case is still ranked, without the analysis
        warn(f"cannot analyse {directory}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
        return {}
    tolerances = {d: Tolerance(**t) for d, t in meta.get("oracle", {}).get("tolerances", {}).items()}
    return analyze_mismatch(finding, outputs, model, tolerances, meta.get("versions", {}).get("targets", {}), inputs)


def cause_of(finding: dict[str, Any]) -> dict[str, Any]:
    """The finding's root cause; a case saved before root causes existed counts as its signature."""
    return finding.get("root_cause") or {"key": finding["signature"],
                                         "id": hashlib.sha1(finding["signature"].encode()).hexdigest()[:10]}


def cause_index(path: Path) -> dict[str, dict[str, Any]]:
    """The run root's root_causes.json ({} when absent): counts and every signature seen."""
    index = RootCauseIndex(path)
    return index.load() if index.path.is_file() else {}


def merge(into: Ranked, alias: Ranked) -> None:
    """Fold a root cause that reduced to the same graph as ``into`` into it."""
    into.signatures += [sig for sig in alias.signatures if sig not in into.signatures]
    into.cases += [case for case in alias.cases if case not in into.cases]
    into.count += alias.count
    into.tags = sorted(set(into.tags) | set(alias.tags) | {f"merged:{alias.id}"})


def rank(path: Path, only_crashes: bool = False, exclude_ops: set[str] | None = None,
         warn=lambda line: None) -> tuple[list[Ranked], list[str]]:
    """Ranked root causes (credible bugs first, best first; noise after) and the one-line reasons for
    skipped folders. A root cause's score is its best finding's; noise scores at most 15."""
    excluded = {op.lower() for op in exclude_ops or ()}
    directories = discover(path)
    seen = counts(path, directories)
    known = cause_index(path)
    skipped: list[str] = []
    by_cause: dict[str, Ranked] = {}
    for directory in directories:
        try:
            meta = read_meta(directory)
        except CaseError as error:
            skipped.append(f"skipping: {error}")
            warn(skipped[-1])
            continue
        for finding in meta["findings"]:
            if only_crashes and finding["verdict"] not in FAILURES:
                continue
            reduced = reduced_meta(directory, finding["signature"])
            if excluded & {op.lower() for op in case_ops(meta, reduced)}:
                continue
            if finding["verdict"] not in FAILURES and "analysis" not in finding:
                finding["analysis"] = recompute(directory, meta, finding, warn)
            cause = cause_of(finding)
            value, tags = score(finding, meta, reduced)
            noise = bool(cause.get("noise"))
            tags = cause["tags"] if "tags" in cause else tags  # the root cause weighed localization too
            value = min(value, 15.0) if noise else value
            sig, key = finding["signature"], cause["key"]
            entry = by_cause.get(key)
            if entry is None:
                entry = by_cause[key] = Ranked(key, cause["id"], finding["verdict"], list(finding["targets"]),
                                               round(value, 1), where(finding, meta), 0, noise=noise,
                                               root_cause=cause)
            if sig not in entry.signatures:
                entry.signatures.append(sig)
                entry.count += seen.get(sig, 0)
            if value > entry.score or not entry.cases:  # the best example goes first
                entry.score, entry.where, entry.analysis = round(value, 1), where(finding, meta), finding.get("analysis") or {}
                entry.reduced = f"{reduced['nodes_before']}->{reduced['nodes_after']}" if reduced else entry.reduced
                entry.cases.insert(0, str(directory))
            elif str(directory) not in entry.cases:
                entry.cases.append(str(directory))
            entry.tags = sorted(set(entry.tags) | set(tags))
    for key in [k for k in by_cause if known.get(k, {}).get("alias_of") in by_cause]:
        merge(by_cause[known[key]["alias_of"]], by_cause.pop(key))  # one defect: its reductions agree
    for entry in by_cause.values():
        indexed = known.get(entry.key, {})
        entry.signatures += [sig for sig in indexed.get("signatures", []) if sig not in entry.signatures]
        entry.count = max(entry.count, indexed.get("count", 0), len(entry.cases))
    ranked = sorted(by_cause.values(), key=lambda e: (e.noise, -e.score, -e.count, e.key))
    return ranked, skipped


def describe(entry: Ranked) -> str:
    """The root cause in words: kind, blamed side, op (dtype, attribute class)."""
    cause = entry.root_cause
    if "op" not in cause:
        return entry.where
    if cause.get("kind") in FAILURES:
        return f"{cause['kind']} at {cause['op']} on {cause.get('blamed')}"
    extra = ", ".join(p for p in (cause.get("dtype"), cause.get("attrs")) if p)
    return f"{cause.get('kind')} in {cause.get('op')}" + (f" ({extra})" if extra else "") + f" on {cause.get('blamed')}"


def markdown(ranked: list[Ranked], source: Path) -> str:
    lines = [f"# HiGen triage of `{source}`", "",
             f"{sum(not e.noise for e in ranked)} bugs (credible root causes), "
             f"{sum(e.noise for e in ranked)} root causes of noise.", "",
             "| # | score | root cause | where | signatures | seen | cases | reduced | tags | example |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for number, e in enumerate(ranked, 1):
        cells = [str(number), f"{e.score:g}" + (" (noise)" if e.noise else ""), describe(e), e.where,
                 str(len(e.signatures)), str(e.count), str(len(e.cases)), e.reduced, " ".join(e.tags),
                 f"`{e.cases[0]}`"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
