"""The differential oracle: outcomes of one test on several targets -> a verdict and its findings.

Each compared pair of targets (and each target alone, for crashes and errors) can yield a finding
with a *signature*: what kind of failure, on which targets, and a normalized description (numbers,
addresses, temp paths and node names removed) so that the same bug found twice is recognised.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np

from higen.backends.base import REFERENCE, Outcome
from higen.tensors import Tensors


class Verdict(StrEnum):
    OK = "ok"
    MISMATCH = "mismatch"
    NAN_INF_MISMATCH = "nan_inf_mismatch"
    SHAPE_MISMATCH = "shape_mismatch"
    DTYPE_MISMATCH = "dtype_mismatch"
    CRASH = "crash"
    ERROR = "error"
    TIMEOUT = "timeout"
    UNSUPPORTED = "unsupported"
    INVALID = "invalid"


#: Most severe first: a test's verdict is the most severe of its findings.
SEVERITY = [Verdict.CRASH, Verdict.TIMEOUT, Verdict.ERROR, Verdict.DTYPE_MISMATCH, Verdict.SHAPE_MISMATCH,
            Verdict.NAN_INF_MISMATCH, Verdict.MISMATCH, Verdict.UNSUPPORTED, Verdict.INVALID, Verdict.OK]
FINDING_KINDS = set(SEVERITY[:7])


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


#: Per dtype: fp16 far looser than fp32/fp64; integers and bools must match exactly.
DEFAULT_TOLERANCES = {
    "float16": Tolerance(5e-2, 5e-2),
    "float32": Tolerance(1e-2, 1e-3),
    "float64": Tolerance(1e-6, 1e-9),
}
EXACT = Tolerance(0.0, 0.0)
NAN_POLICIES = ("skip-unstable", "strict")


@dataclass
class Finding:
    verdict: Verdict
    targets: tuple[str, ...]
    signature: str
    detail: str
    output: str = ""
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    #: what the finding is (higen.bugs.rootcause.RootCause.to_json), set in the pipeline after judging
    root_cause: dict | None = None
    #: output-level features and noise patterns (higen.bugs.analysis.analyze_mismatch), value kinds only
    analysis: dict | None = None

    @property
    def key(self) -> str:
        """Short stable id of the signature, usable in a directory name."""
        return hashlib.sha1(self.signature.encode()).hexdigest()[:10]

    def to_json(self) -> dict:
        data = asdict(self)
        data["verdict"] = str(self.verdict)
        return data


@dataclass
class Judgement:
    verdict: Verdict
    findings: list[Finding] = field(default_factory=list)


# -- normalization -----------------------------------------------------------------------------
_NOISE = [
    # C++ signatures ("virtual Status ns::Pass::Apply(Graph&, ...) const") shrink to the qualified name, so the
    # message after them survives the length cap below
    (re.compile(r"(?:virtual\s+)?(?:[\w<>]*::[\w:<>]*\s+)?([\w:<>~]+::~?\w+)\([^()]*\)(?:\s*const)?"), r"\1"),
    (re.compile(r"0x[0-9a-fA-F]+"), "ADDR"),
    (re.compile(r"[\w./-]+\.(cc|cpp|hpp|h|py):\d+"), "SRC"),  # source locations move between releases
    (re.compile(r"(?<![\w.])/[^\s'\",:)]+"), "PATH"),  # file paths and ONNX node names like /mlist.1/Relu
    (re.compile(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b"), "N"),
    (re.compile(r"\s+"), " "),
]
_FRAME = re.compile(r"^\s*(File \"|Traceback|\d+: |at |#\d+ |\^|~|Exception from \S+:\d+:?\s*$)")


def normalize_message(text: str) -> str:
    for pattern, replacement in _NOISE:
        text = pattern.sub(replacement, text)
    return text.strip()[:300]


def first_meaningful_line(text: str) -> str:
    """The first line that says what went wrong, skipping tracebacks, stack frames and blanks."""
    lines = _meaningful_lines(text)
    return _error_line(lines) or (lines[0] if lines else "")


def crash_line(log_tail: str) -> str:
    """What a crashed worker said about it: the first line of its log tail that names an error, else
    nothing. Never any other log line: which ones a tail holds depends on the log level (coverage
    turns ORT's INFO lines on) and on where the tail's window cuts, so a replay would not match."""
    return _error_line(_meaningful_lines(log_tail))


def _meaningful_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not _FRAME.match(line)]


def _error_line(lines: list[str]) -> str:
    return next((line for line in lines
                 if re.search(r"error|check failed|exception|assert|unsupported|invalid|fail", line, re.I)), "")


# -- comparisons -------------------------------------------------------------------------------
def _all_finite(values: np.ndarray) -> bool:
    return not np.issubdtype(values.dtype, np.floating) or bool(np.isfinite(values).all())


def _tolerance(dtype: np.dtype, overrides: dict[str, Tolerance]) -> Tolerance:
    return overrides.get(dtype.name) or DEFAULT_TOLERANCES.get(dtype.name, EXACT)


def compare_tensors(expected: np.ndarray, actual: np.ndarray, tolerances: dict[str, Tolerance],
                    precision: str | None = None) -> tuple[Verdict, str, float | None, float | None]:
    """Compare two outputs; NaN/Inf must sit in the same positions with the same class.
    ``precision`` names the dtype whose tolerance applies when a target computes internally in a
    narrower type than it declares (OpenVINO CPU runs float64 as float32)."""
    if expected.dtype != actual.dtype:
        return Verdict.DTYPE_MISMATCH, f"dtype {expected.dtype} vs {actual.dtype}", None, None
    if expected.shape != actual.shape:
        return Verdict.SHAPE_MISMATCH, f"shape {expected.shape} vs {actual.shape}", None, None
    if not np.issubdtype(expected.dtype, np.floating):
        differs = expected != actual
        if differs.any():
            return Verdict.MISMATCH, f"{int(differs.sum())}/{differs.size} elements differ", None, None
        return Verdict.OK, "", None, None
    a, b = expected.astype(np.float64), actual.astype(np.float64)
    inf_a, inf_b = np.isinf(a), np.isinf(b)
    special = (np.isnan(a) != np.isnan(b)) | (inf_a != inf_b) | (inf_a & inf_b & (a != b))
    if special.any():
        return Verdict.NAN_INF_MISMATCH, f"{int(special.sum())}/{a.size} elements differ in NaN/Inf", None, None
    both = np.isfinite(a) & np.isfinite(b)
    tol = _tolerance(np.dtype(precision or expected.dtype), tolerances)
    abs_err = np.abs(a[both] - b[both])
    if abs_err.size == 0:
        return Verdict.OK, "", 0.0, 0.0
    with np.errstate(over="ignore"):  # huge errors relative to denormals are still just huge
        rel_err = abs_err / np.maximum(np.abs(a[both]), np.finfo(np.float64).tiny)
    bad = abs_err > tol.atol + tol.rtol * np.abs(a[both])
    max_abs, max_rel = float(abs_err.max()), float(rel_err.max())
    if bad.any():
        return (Verdict.MISMATCH, f"{int(bad.sum())}/{a.size} elements off (max abs {max_abs:.3g}, "
                f"max rel {max_rel:.3g}, rtol {tol.rtol}, atol {tol.atol})", max_abs, max_rel)
    return Verdict.OK, "", max_abs, max_rel


def _compare_pair(left: str, right: str, outputs: dict[str, Tensors], producers: dict[str, str],
                  tolerances: dict[str, Tolerance], precision: dict[str, dict[str, str]],
                  skip_unstable: bool) -> Finding | None:
    """The first diverging output of two targets, as a finding (None when they agree)."""
    expected, actual = outputs[left], outputs[right]
    reference = outputs.get(REFERENCE, {})
    missing = sorted(set(expected) ^ set(actual))
    if missing:
        return Finding(Verdict.SHAPE_MISMATCH, (left, right), f"shape_mismatch|{left}|{right}|outputs",
                       f"outputs present on one side only: {missing}")
    for name in expected:
        if skip_unstable and name in reference and not _all_finite(reference[name]):
            continue  # the reference left the stable domain: any NaN/Inf pattern is as good as another
        dtype = expected[name].dtype.name
        narrowed = precision.get(left, {}).get(dtype) or precision.get(right, {}).get(dtype)
        verdict, detail, max_abs, max_rel = compare_tensors(expected[name], actual[name], tolerances, narrowed)
        if verdict is not Verdict.OK:
            op = producers.get(name, "?")
            return Finding(verdict, (left, right), f"{verdict}|{left}|{right}|{op}|{expected[name].dtype}",
                           f"output {name} (from {op}): {detail}", name, max_abs, max_rel)
    return None


def _failure_finding(outcome: Outcome) -> Finding:
    verdict = Verdict(outcome.status)
    if verdict is Verdict.CRASH:
        line = crash_line(outcome.log_tail)
        what = outcome.signal or outcome.error_type
    elif verdict is Verdict.TIMEOUT:
        line, what = "", "timeout"
    else:
        line = first_meaningful_line(outcome.message)
        what = outcome.error_type
    signature = f"{verdict}|{outcome.target}|{outcome.stage}|{what}|{normalize_message(line)}"
    detail = f"{outcome.target} {verdict} in {outcome.stage or 'worker'}: {outcome.message or line}"
    return Finding(verdict, (outcome.target,), signature, detail[:2000])


def judge(outcomes: dict[str, Outcome], outputs: dict[str, Tensors], pairs: list[tuple[str, str]],
          producers: dict[str, str], tolerances: dict[str, Tolerance] | None = None,
          precision: dict[str, dict[str, str]] | None = None, nan_policy: str = "skip-unstable") -> Judgement:
    """Judge one test. ``outputs`` holds the outputs of every target that ran (the reference too);
    ``pairs`` says which targets are compared; ``producers`` maps output name -> producing op type;
    ``precision`` maps target -> {declared dtype: dtype it computes in} (from the backend's describe);
    ``nan_policy`` ``strict`` compares every output, ``skip-unstable`` (default) skips outputs whose
    PyTorch reference holds NaN/Inf, as NNSmith does: such values depend on evaluation order."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan policy must be one of {NAN_POLICIES}, not {nan_policy!r}")
    tolerances, precision = tolerances or {}, precision or {}
    findings = [_failure_finding(o) for o in outcomes.values() if o.status in ("crash", "timeout", "error")]
    blamed = {f.targets[0] for f in findings}
    for left, right in pairs:  # priority order; each target is blamed at most once
        if left in blamed or right in blamed or left not in outputs or right not in outputs:
            continue
        finding = _compare_pair(left, right, outputs, producers, tolerances, precision,
                                nan_policy == "skip-unstable")
        if finding:
            findings.append(finding)
            blamed.add(right)
    if findings:
        verdict = min((f.verdict for f in findings), key=SEVERITY.index)
    elif any(o.status == "unsupported" for o in outcomes.values()):
        verdict = Verdict.UNSUPPORTED
    else:
        verdict = Verdict.OK
    return Judgement(verdict, findings)
