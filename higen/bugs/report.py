"""``higen report CASE`` (the command is :mod:`higen.cli.report`): a bug report as the runtime's
tracker asks for it, in Markdown.

The report is built from the case folder only (meta.json, the saved tensors, ``reduced/`` and
``localization.json`` when they exist): title, what goes wrong, the versions, a standalone script
that rebuilds the graph node by node with ``onnx.helper`` (the reduced graph when ``higen reduce``
ran; inputs embedded in the script), observed vs expected values with the targets that agree with
each side, the pass ablation of ``higen localize`` and the known upstream issues it resembles
(:mod:`higen.bugs.known_issues`). The script then runs once in a subprocess, bounded by
``--timeout``, and its output goes into the report (``--no-run`` skips that).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from higen.backends.base import REFERENCE
from higen.bugs.case import BugCase, CaseError, load_case, load_outputs
from higen.bugs.known_issues import RUNTIMES, KnownIssue, match_known, signature_fields
from higen.bugs.report_script import PACKAGES, ReportError, Subject, ablation_sets, runtime_of, script
from higen.bugs.standalone import FAILURES, FOLDED_MODEL
from higen.oracle import Verdict, compare_tensors, first_meaningful_line

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # ONNX Runtime colours its log lines
RUNTIME_NAMES = {"ort": "ONNX Runtime", "ov": "OpenVINO", "tvm": "TVM"}
TRACKERS = {"ort": "https://github.com/microsoft/onnxruntime/issues/new/choose",
            "ov": "https://github.com/openvinotoolkit/openvino/issues/new/choose",
            "tvm": "https://github.com/apache/tvm/issues/new/choose"}
LEVELS = {"ort": {"O0": "ORT_DISABLE_ALL", "O3": "ORT_ENABLE_ALL"},
          "tvm": {"O0": "opt_level=0", "O3": "opt_level=3 with the target's Relax pipeline"}}


# -- the case: which graph, which finding, who is blamed ----------------------------------------
def pick_source(case: BugCase) -> tuple[BugCase, dict[str, Any]]:
    """The reduced case when ``higen reduce`` wrote one that still holds the finding, else the case."""
    try:
        reduced = load_case(case.path / "reduced")
    except CaseError:
        return case, case.finding()
    for signature in (case.signature, reduced.signature):
        try:
            return reduced, reduced.finding(signature)
        except CaseError:
            continue
    return case, case.finding()


def deviates(outputs: dict[str, dict[str, np.ndarray]], target: str, name: str, case: BugCase) -> bool:
    """Whether ``target``'s saved output ``name`` differs from the reference's (saved tensors only)."""
    mine, reference = outputs.get(target, {}).get(name), outputs[REFERENCE].get(name)
    if mine is None or reference is None:
        return False
    return compare_tensors(reference, mine, case.tolerances)[0] is not Verdict.OK


def blame(source: BugCase, finding: dict[str, Any], cause: dict[str, Any]) -> tuple[str, str, str]:
    """(blamed, expected side, observed side). The root cause's ``wrong_side`` or ``blamed`` when it
    names one target; a failure blames its target; a mismatch with PyTorch the other side; between
    two targets, the one whose saved output leaves PyTorch's (else the pair, ``A~B``)."""
    targets = list(finding["targets"])
    recorded = cause.get("wrong_side") or cause.get("blamed") or ""
    if finding["verdict"] in FAILURES:
        return recorded or targets[-1], "", targets[-1]
    left, right = targets
    if recorded in targets and recorded != REFERENCE:
        return recorded, right if recorded == left else left, recorded
    if REFERENCE in targets:
        other = right if left == REFERENCE else left
        return other, REFERENCE, other
    outputs = load_outputs(source.path, source.meta)
    off = [t for t in targets if deviates(outputs, t, finding.get("output", ""), source)]
    observed = off[0] if len(off) == 1 else right
    expected = left if observed == right else right
    return (observed if len(off) == 1 else f"{left}~{right}"), expected, observed


def root_cause(finding: dict[str, Any]) -> dict[str, Any]:
    """The finding's ``root_cause`` object, or one derived from its signature (older cases)."""
    if isinstance(finding.get("root_cause"), dict):
        return finding["root_cause"]
    fields = signature_fields(finding["signature"])
    return {"kind": finding["verdict"], "op": fields.get("op", ""), "dtype": fields.get("dtype", ""),
            "derived_from": "signature"}


def subject(case: BugCase) -> Subject:
    source, finding = pick_source(case)
    cause = root_cause(finding)
    if "derived_from" in cause:  # the original finding may carry the root cause the reduced one lacks
        original = next((f for f in case.meta["findings"] if f["signature"] == finding["signature"]), {})
        cause = original.get("root_cause") or cause
    blamed, expected, observed = blame(source, finding, cause)
    return Subject(case, source, finding, cause, blamed, expected, observed)


def matching_cause(subj: Subject, model: onnx.ModelProto) -> dict[str, Any]:
    """The root cause for known-issue matching: a failure, or a reduced graph, adds the graph's op
    types (on a reduced graph they are the defect's neighbourhood; a failure has no diverging op)."""
    if subj.finding["verdict"] in FAILURES or subj.source is not subj.case:
        ops = sorted({node.op_type for node in model.graph.node} | set(subj.root_cause.get("ops") or []))
        return {**subj.root_cause, "ops": ops}
    return subj.root_cause


# -- the report -----------------------------------------------------------------------------------
def describe_versions(case: BugCase) -> dict[str, str]:
    """Package -> version as recorded in the case (runtimes of its targets, onnx, numpy, python, OS)."""
    found = {}
    for described in (case.meta.get("versions", {}).get("targets") or {}).values():
        if described.get("runtime") and described.get("version"):
            found[described["runtime"]] = str(described["version"])
    environment = case.meta.get("environment") or {}
    for key in ("onnx", "numpy", "python", "platform"):
        if environment.get(key):
            found[key] = environment[key]
    return found


def device_words(target: str) -> str:
    """``ort:cpu:O3`` -> ``CPUExecutionProvider``; other runtimes' device names stay as they are."""
    device = target.split(":")[1] if target.count(":") else target
    if runtime_of(target) == "ort":
        return {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(device, device)
    return device


def level_words(target: str) -> str:
    """``ort:cpu:O3`` -> ``ORT_ENABLE_ALL``: the optimization level in the runtime's own words."""
    _, _, *opt = target.split(":")
    return LEVELS.get(runtime_of(target), {}).get(opt[0], "") if opt else ""


def title_of(subj: Subject, versions: dict[str, str], localization: dict[str, Any] | None) -> str:
    runtime = runtime_of(subj.observed)
    name = RUNTIME_NAMES.get(runtime, runtime)
    version = versions.get(RUNTIMES.get(runtime, ""), "").split("-")[0]  # 2026.4.1-22982-e213a14... -> 2026.4.1
    cause = subj.root_cause
    op, dtype = cause.get("op") or "", cause.get("dtype") or ""
    level = level_words(subj.observed)
    fixes = ablation_sets(localization, subj.observed)
    kind = subj.finding["verdict"]
    if kind in FAILURES:  # a failure's root-cause op is its stage: name the graph's ops instead
        outcome = subj.source.meta["outcomes"].get(subj.observed, {})
        what = {"crash": f"crashes ({outcome.get('signal') or 'signal'})", "timeout": "hangs",
                "error": "fails"}[kind]
        graph = onnx.load(str(subj.source.model_path), load_external_data=False).graph
        ops = ", ".join(sorted({node.op_type for node in graph.node}))
        text = f"{name} {version} {what} in {outcome.get('stage') or 'compile'} on a valid {len(graph.node)}-node " \
               f"model ({ops})"
    else:
        text = f"{name} {version}: wrong result from {f'{op} ({dtype})' if op else 'the model'}"
    if level:
        text += f" at {level}"
    if fixes:
        text += f"; disabling {', '.join(fixes[0])} fixes it"
    return " ".join(text.split())


def value_table(subj: Subject) -> list[str]:
    """Observed vs expected on the finding's output, and which targets agree with each side."""
    name = subj.finding.get("output", "")
    outputs = load_outputs(subj.source.path, subj.source.meta)
    expected, observed = outputs.get(subj.expected, {}).get(name), outputs.get(subj.observed, {}).get(name)
    lines = [f"- **Output** `{name}`: {subj.finding.get('detail', '')}"]
    if expected is not None and observed is not None:
        flat_e, flat_o = expected.ravel(), observed.ravel()
        lines += ["", "| element | expected (`" + subj.expected + "`) | observed (`" + subj.observed + "`) |",
                  "|---|---|---|"]
        lines += [f"| {i} | {str(flat_e[i])} | {str(flat_o[i])} |" for i in range(min(8, flat_e.size, flat_o.size))]
        lines.append("")
    for key, label in (("max_abs_error", "max abs error"), ("max_rel_error", "max rel error")):
        if subj.finding.get(key) is not None:
            lines.append(f"- **{label}**: {subj.finding[key]:.6g}")
    for side, agreeing in agreeing_sides(subj, outputs).items():
        lines.append(f"- **agree with `{side}`**: {', '.join(f'`{t}`' for t in agreeing) or 'no other target'}")
    return lines


def agreeing_sides(subj: Subject, outputs: dict[str, dict[str, np.ndarray]]) -> dict[str, list[str]]:
    """Expected and observed side -> the other saved targets (the reference included) that agree with it."""
    name = subj.finding.get("output", "")
    sides: dict[str, list[str]] = {subj.expected: [], subj.observed: []}
    for target, values in outputs.items():
        if target in sides or name not in values:
            continue
        for side in sides:
            if name in outputs.get(side, {}) and \
                    compare_tensors(outputs[side][name], values[name], subj.source.tolerances)[0] is Verdict.OK:
                sides[side].append(target)
                break
    return sides


def failure_lines(subj: Subject) -> list[str]:
    outcomes = subj.source.meta.get("outcomes", {})
    ran = [f"`{t}`" for t, o in outcomes.items() if t != subj.observed and o.get("status") == "ok"]
    return [f"- **expected**: `{subj.observed}` builds and runs the model (it passes "
            f"`onnx.checker.check_model(full_check=True)`{'; ' + ', '.join(ran) + ' run it' if ran else ''})",
            f"- **observed**: {subj.finding.get('detail', '')}"]


def ablation_lines(localization: dict[str, Any] | None, case: BugCase) -> list[str]:
    if localization is None:
        return [f"Not computed for this case: run `higen localize {case.path}` (it writes `localization.json`), "
                "then `higen report` again."]
    lines = []
    node = localization.get("node")
    if node:
        lines.append(f"- **first diverging node**: `{node['name']}` ({node['op_type']}, output `{node['output']}`), "
                     f"found by {localization.get('method') or '?'}: {node.get('detail', '')}")
    elif localization.get("node_note"):
        lines.append(f"- **node**: {localization['node_note']}")
    for target, found in (localization.get("pass_search") or {}).items():
        tried = (f" ({found.get('tried', 0)} of {found['candidates']} switches tried)" if found.get("candidates")
                 else "")
        lines.append(f"- **`{target}`**: {found.get('answer', '')}{tried}")
    if not localization.get("reproduced", True):
        lines.append(f"- localization did not reproduce the finding: {localization.get('answer', '')}")
    return lines or ["`localization.json` holds no answer."]


def similar_lines(matches: list[KnownIssue], subj: Subject) -> list[str]:
    if not matches:
        op = subj.root_cause.get("op") or ""
        return ["None in HiGen's list of known upstream issues (`higen/bugs/known_issues.toml`). Search the "
                f"tracker for `{op}` before filing." if op else "None in HiGen's list of known upstream issues."]
    return [f"- [{m.id}]({m.url}) ({m.status}): {m.title}" if m.url else
            f"- {m.id}: {m.title}. In HiGen's list as not reported upstream yet{f' ({m.notes})' if m.notes else ''}."
            for m in matches]


def describe(subj: Subject, versions: dict[str, str]) -> list[str]:
    kind = subj.finding["verdict"]
    nodes = len(onnx.load(str(subj.source.model_path), load_external_data=False).graph.node)
    where = "the reduced" if subj.source is not subj.case else "the"
    if kind in FAILURES:
        text = (f"`{subj.observed}` {kind}es on {where} {nodes}-node model below"
                if kind == "crash" else f"`{subj.observed}` reports a {kind} on {where} {nodes}-node model below")
        outcome = subj.source.meta["outcomes"].get(subj.observed, {})
        message = first_meaningful_line(outcome.get("message", ""))
        lines = [text + f" (stage: {outcome.get('stage') or '?'}).", ""]
        if message:
            lines += ["```", message[:1500], "```"]
        return lines
    cause = subj.root_cause
    attrs = f", attributes: {cause['attrs']}" if cause.get("attrs") else ""
    lines = [f"`{subj.observed}` computes a different result than `{subj.expected}` on {where} {nodes}-node model "
             f"below ({kind}); the model is valid (`onnx.checker.check_model(full_check=True)`). Blamed: "
             f"`{subj.blamed}`; root cause: {cause.get('op') or '?'} ({cause.get('dtype') or '?'}{attrs})."]
    agreeing = agreeing_sides(subj, load_outputs(subj.source.path, subj.source.meta))
    level = level_words(subj.expected)
    if REFERENCE in agreeing.get(subj.expected, []):
        lines += ["", f"`{subj.expected}`{f' ({level})' if level else ''} agrees with the reference "
                      f"(`{REFERENCE}`), so the result of `{subj.observed}` is the wrong one."]
    return lines


def environment_lines(versions: dict[str, str], ran: str | None) -> list[str]:
    lines = [f"- {key}: {value}" for key, value in versions.items()]
    if ran:
        lines.append(f"- checked again with: {ran}")
    return lines


def run_script(source: str, timeout_s: float) -> tuple[int | None, str]:
    """Run the repro in a subprocess (fresh interpreter, bounded); (exit status, output)."""
    with tempfile.TemporaryDirectory(prefix="higen-report-") as work:
        path = Path(work) / "repro.py"
        path.write_text(source)
        try:
            done = subprocess.run([sys.executable, str(path)], cwd=work, capture_output=True, text=True,
                                  timeout=timeout_s, env=_quiet_env())
        except subprocess.TimeoutExpired:
            return None, f"(no result within {timeout_s:g} s)"
    output = ANSI.sub("", done.stdout + done.stderr).strip()
    if done.returncode < 0:
        output += f"\n(the process died: signal {-done.returncode})"
    return done.returncode, output[-4000:]


def _quiet_env() -> dict[str, str]:
    import os

    return dict(os.environ, OMP_NUM_THREADS="1", TVM_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def installed(runtime: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{PACKAGES[runtime]} {version(PACKAGES[runtime])}"
    except (KeyError, PackageNotFoundError):
        return f"{PACKAGES.get(runtime, runtime)} not installed"


SECTIONS = {  # runtime -> (heading, part) in the order its issue template asks for them
    "ort": [("Describe the issue", "describe"), ("Observed vs expected", "values"), ("Pass ablation", "ablation"),
            ("To reproduce", "repro"), ("Output of the script", "output"), ("Similar known issues", "similar"),
            ("Urgency", "urgency"), ("Platform and versions", "environment"),
            ("ONNX Runtime API", "api"), ("Execution Provider", "provider")],
    "ov": [("OpenVINO Version and environment", "environment"), ("Device used for inference", "provider"),
           ("Framework", "framework"), ("Issue description", "describe"), ("Observed vs expected", "values"),
           ("Pass ablation", "ablation"), ("Step-by-step reproduction", "repro"),
           ("Relevant log output", "output"), ("Similar known issues", "similar")],
    "tvm": [("Expected behavior", "expected"), ("Actual behavior", "describe"), ("Observed vs expected", "values"),
            ("Pass ablation", "ablation"), ("Environment", "environment"), ("Steps to reproduce", "repro"),
            ("Output of the script", "output"), ("Similar known issues", "similar"), ("Triage", "triage")],
}


@dataclass
class Report:
    markdown: str
    script: str
    exit_status: int | None  # of the script's run (None: not run or timed out)
    matches: list[KnownIssue]


def build_report(case_dir: Path | str, run: bool = True, timeout_s: float = 120.0,
                 known: list[KnownIssue] | None = None) -> Report:
    """Write the report of ``case_dir`` (module doc); raises CaseError / ReportError on an unusable case."""
    case = load_case(case_dir)
    subj = subject(case)
    localization = _localization(case, subj.source)
    versions = describe_versions(case)
    title = title_of(subj, versions, localization)
    model_path = subj.source.path / FOLDED_MODEL if runtime_of(subj.observed) == "tvm" and \
        (subj.source.path / FOLDED_MODEL).is_file() else subj.source.model_path
    model = onnx.load(str(model_path))
    with np.load(subj.source.inputs_path, allow_pickle=False) as archive:
        feeds = {key: archive[key] for key in archive.files}
    source = script(subj, model, feeds, localization, title)
    status, output = run_script(source, timeout_s) if run else (None, "")
    matches = match_known(subj.finding, matching_cause(subj, model), case.meta.get("versions", {}), known)
    runtime = runtime_of(subj.observed)
    ran = ", ".join(dict.fromkeys(installed(runtime_of(t)) for t in (subj.expected, subj.observed)
                                  if t and t != REFERENCE)) if run else None
    parts = {
        "describe": describe(subj, versions),
        "values": value_table(subj) if subj.finding["verdict"] not in FAILURES else
        failure_lines(subj),
        "ablation": ablation_lines(localization, case),
        "repro": [f"The graph is rebuilt node by node with `onnx.helper` "
                  f"({'the reduced graph of `higen reduce`' if subj.source is not case else 'the case graph'}"
                  f"{', integer constant subgraphs folded as TVM got it' if model_path.name == FOLDED_MODEL else ''}); "
                  "the inputs are embedded.", "", "```python", source.rstrip(), "```"],
        "output": (["```", output or "(no output)", "```", f"exit status: {status}"] if run
                   else ["Not run (`--no-run`)."]),
        "similar": similar_lines(matches, subj),
        "environment": environment_lines(versions, ran),
        "urgency": ["Silent wrong results with default session options." if subj.finding["verdict"] not in FAILURES
                    else "The model cannot be used with default session options."],
        "api": ["Python"], "framework": ["ONNX"],
        "provider": [f"{device_words(subj.observed)} (HiGen target `{subj.observed}`)"],
        "expected": [f"The same result as `{subj.expected}`." if subj.expected else "The model compiles and runs."],
        "triage": ["* needs-triage", "* frontend:onnx" if runtime == "tvm" else ""],
    }
    lines = [f"# {title}", "", f"<!-- written by `higen report` from case {case.path.resolve().name}; file at "
                               f"{TRACKERS.get(runtime, '')} (finding {subj.finding['signature']}) -->"]
    for heading, key in SECTIONS.get(runtime, SECTIONS["ort"]):
        lines += ["", f"### {heading}", "", *[line for line in parts[key] if line is not None]]
    return Report("\n".join(lines).rstrip() + "\n", source, status, matches)


def _localization(case: BugCase, source: BugCase) -> dict[str, Any] | None:
    for folder in dict.fromkeys((source.path, case.path)):
        path = folder / "localization.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ReportError(f"{path} is not valid JSON ({error}); run `higen localize` again") from error
    return None
