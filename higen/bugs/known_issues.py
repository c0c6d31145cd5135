"""Upstream issues a finding may already be filed as: ``known_issues.toml`` (next to this module)
read into :class:`KnownIssue` entries, and :func:`match_known`, a pure function from a finding (its
meta.json dict), its root cause and the runtime versions to the entries it matches.

The list is small and versioned (``format_version``); the file's header says what each field
means. Matching never evaluates a model: it reads the finding's verdict, targets, message,
``analysis`` and the root cause's op, dtype, ops and tags.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from higen.errors import UserError

DEFAULT_PATH = Path(__file__).with_name("known_issues.toml")
FORMAT_VERSION = 1
#: Target prefix (``ort:cpu:O3``) -> runtime name used in the file and in meta.json's versions.
RUNTIMES = {"ort": "onnxruntime", "ov": "openvino", "tvm": "tvm"}
STATUSES = ("open", "closed", "fixed", "unreported")
_LIST_FIELDS = ("kinds", "ops", "dtypes", "tags")
_TEXT_FIELDS = ("id", "runtime", "title", "url", "status", "message", "notes")
_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*([0-9][0-9A-Za-z.+-]*)\s*$")


class KnownIssuesError(UserError):
    """A known-issues file that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class KnownIssue:
    """One upstream issue and the pattern of findings it explains (fields: known_issues.toml)."""

    id: str
    runtime: str
    url: str
    title: str
    status: str
    versions: str | tuple[str, ...] = "*"
    kinds: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    message: str = ""
    notes: str = ""
    _message_re: re.Pattern | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "runtime": self.runtime, "url": self.url, "title": self.title, "status": self.status}


def version_key(version: str) -> tuple[int, ...]:
    """``2026.4.0-20398-abc`` -> (2026, 4, 0); ``0.27.dev0`` -> (0, 27): the release's leading numeric
    parts (a build suffix after ``-`` or ``+`` is not part of the release)."""
    parts = []
    for part in re.split(r"[-+]", version.strip())[0].split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def _compare(have: tuple[int, ...], op: str, want: tuple[int, ...]) -> bool:
    width = max(len(have), len(want))
    have, want = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
    return {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want,
            "==": have == want, "!=": have != want}[op]


def version_affected(version: str, spec: str | tuple[str, ...]) -> bool:
    """Whether ``version`` lies in ``spec``: ``*``, comparisons joined by commas, or exact versions."""
    if isinstance(spec, tuple):
        return any(version_key(version) == version_key(v) for v in spec)
    if spec.strip() == "*":
        return True
    have = version_key(version)
    for clause in spec.split(","):
        op, wanted = _COMPARISON.match(clause).groups()
        if not _compare(have, op or "==", version_key(wanted)):
            return False
    return True


def _check_versions(spec: Any, where: str) -> str | tuple[str, ...]:
    if isinstance(spec, list) and spec and all(isinstance(v, str) and version_key(v) for v in spec):
        return tuple(spec)
    if isinstance(spec, str) and (spec.strip() == "*" or all(_COMPARISON.match(c) for c in spec.split(","))):
        return spec
    raise KnownIssuesError(f"{where}: versions {spec!r} is neither \"*\", a range such as \">=1.20,<1.32\" "
                           "nor a list of versions")


def _entry(raw: Any, where: str) -> KnownIssue:
    if not isinstance(raw, dict):
        raise KnownIssuesError(f"{where} is not a table")
    missing = [key for key in ("id", "runtime", "title", "status") if key not in raw]
    if missing:
        raise KnownIssuesError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_LIST_FIELDS) - set(_TEXT_FIELDS) - {"versions"})
    if unknown:
        raise KnownIssuesError(f"{where} has unknown field(s) {', '.join(unknown)}")
    for key in _TEXT_FIELDS:
        if key in raw and not isinstance(raw[key], str):
            raise KnownIssuesError(f"{where}: {key} must be a string")
    for key in _LIST_FIELDS:
        if key in raw and not (isinstance(raw[key], list) and all(isinstance(v, str) for v in raw[key])):
            raise KnownIssuesError(f"{where}: {key} must be a list of strings")
    if raw["runtime"] not in RUNTIMES.values():
        raise KnownIssuesError(f"{where}: runtime {raw['runtime']!r} is not one of {', '.join(RUNTIMES.values())}")
    if raw["status"] not in STATUSES:
        raise KnownIssuesError(f"{where}: status {raw['status']!r} is not one of {', '.join(STATUSES)}")
    if raw["status"] != "unreported" and not raw.get("url"):
        raise KnownIssuesError(f"{where}: a reported issue needs its url")
    try:
        pattern = re.compile(raw["message"]) if raw.get("message") else None
    except re.error as error:
        raise KnownIssuesError(f"{where}: message is not a valid regular expression ({error})") from error
    return KnownIssue(id=raw["id"], runtime=raw["runtime"], url=raw.get("url", ""), title=raw["title"],
                      status=raw["status"], versions=_check_versions(raw.get("versions", "*"), where),
                      message=raw.get("message", ""), notes=raw.get("notes", ""), _message_re=pattern,
                      **{key: tuple(raw.get(key, ())) for key in _LIST_FIELDS})


def load_known(path: Path | str | None = None) -> list[KnownIssue]:
    """Read a known-issues file (default: the one shipped with HiGen); KnownIssuesError says what is wrong."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise KnownIssuesError(f"{path}: cannot read it ({error.strerror})") from error
    except tomllib.TOMLDecodeError as error:
        raise KnownIssuesError(f"{path} is not valid TOML ({error}); fix it or pass another file") from error
    if data.get("format_version") != FORMAT_VERSION:
        raise KnownIssuesError(f"{path}: format_version is {data.get('format_version')!r}; this HiGen reads "
                               f"{FORMAT_VERSION}")
    entries = data.get("issue", [])
    if not isinstance(entries, list):
        raise KnownIssuesError(f"{path}: write each issue as an [[issue]] table")
    issues = [_entry(raw, f"{path}: issue {i + 1} ({raw.get('id', '?') if isinstance(raw, dict) else '?'})")
              for i, raw in enumerate(entries)]
    seen: set[str] = set()
    for issue in issues:
        if issue.id in seen:
            raise KnownIssuesError(f"{path}: issue id {issue.id!r} appears twice")
        seen.add(issue.id)
    return issues


def runtime_versions(versions: dict[str, Any]) -> dict[str, str]:
    """Runtime -> version from meta.json's ``versions`` (``targets`` -> ``runtime``, ``version``), or
    from a mapping that already says runtime -> version."""
    found = {key: value for key, value in versions.items() if key in RUNTIMES.values() and isinstance(value, str)}
    for described in (versions.get("targets") or {}).values():
        if isinstance(described, dict) and described.get("runtime") and described.get("version"):
            found.setdefault(described["runtime"], str(described["version"]))
    return found


def signature_fields(signature: str) -> dict[str, str]:
    """The parts of a signature: value kinds ``verdict|left|right|op|dtype``; failures
    ``verdict|target|stage|error|message``."""
    parts = signature.split("|")
    if parts[0] in ("crash", "error", "timeout"):
        return dict(zip(("verdict", "target", "stage", "error", "message"), parts[:4] + ["|".join(parts[4:])]))
    return dict(zip(("verdict", "left", "right", "op", "dtype"), parts))


@dataclass(frozen=True)
class FindingFacts:
    """What matching looks at, gathered from a finding and its root cause."""

    kind: str
    runtimes: frozenset[str]
    op: str
    dtype: str
    ops: frozenset[str]
    tags: frozenset[str]
    text: str


#: Root-cause kinds (:mod:`higen.bugs.rootcause`) -> the verdict names the file uses.
CAUSE_KINDS = {"value": "mismatch", "nan_inf": "nan_inf_mismatch", "shape": "shape_mismatch",
               "dtype": "dtype_mismatch"}
FAILURE_KINDS = ("crash", "error", "timeout")


def finding_facts(finding: dict[str, Any], root_cause: dict[str, Any] | None) -> FindingFacts:
    """The facts of a finding; the root cause (``kind``, ``blamed``, ``wrong_side``, ``op``, ``dtype``,
    ``tags``, and ``ops`` once reduction names the graph's op types) refines the signature's."""
    cause = root_cause or {}
    fields = signature_fields(finding.get("signature", ""))
    kind = str(finding.get("verdict") or CAUSE_KINDS.get(cause.get("kind", ""), cause.get("kind", ""))
               or fields.get("verdict", ""))
    analysis = finding.get("analysis") or {}
    producer = analysis.get("producer") or {}
    op = "" if kind in FAILURE_KINDS else (cause.get("op") or fields.get("op") or "")  # a failure's op is its stage
    ops = {op, *(cause.get("ops") or [])}
    if producer.get("op") and producer["op"] == op:  # what feeds the op (when the analysis is about it)
        ops.update(producer.get("inputs") or [])
    blamed = cause.get("wrong_side") or cause.get("blamed")
    targets = blamed.split("~") if isinstance(blamed, str) and blamed else list(finding.get("targets") or [])
    tags = {str(t) for t in (cause.get("tags") or [])}
    for key in ("noise", "known"):
        value = analysis.get(key)
        tags.update([value] if isinstance(value, str) else [str(t) for t in value or []])
    text = " ".join(str(x) for x in (finding.get("detail"), fields.get("error"), fields.get("message"),
                                     cause.get("attrs") if kind in FAILURE_KINDS else "", cause.get("message")) if x)
    runtimes = frozenset(RUNTIMES.get(t.split(":")[0].split("@")[0], "") for t in targets) - {""}  # ort@1.20.1:cpu:O3
    return FindingFacts(kind=kind, runtimes=runtimes,
                        op=op, dtype=str(cause.get("dtype") or fields.get("dtype") or analysis.get("dtype") or ""),
                        ops=frozenset(o for o in ops if o), tags=frozenset(tags), text=text)


def _matches(issue: KnownIssue, facts: FindingFacts, versions: dict[str, str]) -> bool:
    if issue.runtime not in facts.runtimes:
        return False
    if issue.runtime in versions and not version_affected(versions[issue.runtime], issue.versions):
        return False
    return ((not issue.kinds or facts.kind in issue.kinds)
            and (not issue.dtypes or facts.dtype in issue.dtypes)
            and set(issue.ops) <= facts.ops
            and (not issue.tags or bool(facts.tags.intersection(issue.tags)))
            and (issue._message_re is None or issue._message_re.search(facts.text) is not None))


def match_known(finding: dict[str, Any], root_cause: dict[str, Any] | None, versions: dict[str, Any],
                issues: list[KnownIssue] | None = None) -> list[KnownIssue]:
    """The known issues (default: :func:`load_known`'s) that ``finding`` matches. ``root_cause`` is the
    finding's ``root_cause`` object (or None: the signature stands in); ``versions`` is meta.json's
    ``versions`` or a runtime -> version mapping. A runtime whose version is not given matches on the
    pattern alone."""
    facts = finding_facts(finding, root_cause)
    known = runtime_versions(versions)
    return [issue for issue in (_shipped() if issues is None else issues) if _matches(issue, facts, known)]


@lru_cache(maxsize=1)
def _shipped() -> list[KnownIssue]:
    """The shipped list, read once per process (matching runs for every recorded finding)."""
    return load_known()
