"""Root causes: what a finding *is*, as opposed to how it showed (its signature).

A signature names the op producing the diverging graph output, so one wrong inner op shows up once
per output, dtype and pair. A root cause names the defect instead:

- value, NaN/Inf, shape and dtype mismatches: the kind, the blamed target (the side whose first
  diverging node contradicts the op's definition on its own inputs; else the non-reference side;
  else the pair ``A~B``), the op type of the *first diverging node* found by
  comparing intermediates (:mod:`higen.bugs.locate`), its output dtype, and a coarse class of the
  attributes that change that op's semantics (:func:`attribute_class`);
- crashes, errors and timeouts: target, stage, signal or error type and the normalized message
  (the signature's own parts), refined later by the op multiset of the reduced graph.

A root cause whose evidence says "not a defect" (ill-conditioning, a rounding flip, undefined
behaviour, a suspect reference, a known semantic difference) is *noise*: stored and counted apart,
never rewarded. Everything here is a pure function of JSON-able facts; nothing evaluates a model.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from higen.backends.base import REFERENCE
from higen.bugs.analysis import looks_unsupported
from higen.bugs.nodecheck import DISCRETE_OPS
from higen.graph import producer_nodes

VALUE_KINDS = {"mismatch": "value", "nan_inf_mismatch": "nan_inf", "shape_mismatch": "shape",
               "dtype_mismatch": "dtype"}
FAILURE_KINDS = ("crash", "error", "timeout")
#: Attributes that set sizes, positions or constants rather than the op's arithmetic: left out.
SIZE_ATTRIBUTES = {"kernel_shape", "axes", "axis", "perm", "shape", "starts", "ends", "split", "value",
                   "value_float", "value_floats", "value_int", "value_ints", "sizes", "scales", "output_shape",
                   "min", "max", "alpha", "beta", "gamma", "epsilon", "momentum", "k", "lambd", "bias"}
#: Ops whose semantics depend on their operands' ranks (a 1-D MatMul operand is a vector product).
RANK_SENSITIVE = {"MatMul", "Gemm", "Einsum", "MatMulInteger"}


@dataclass
class RootCause:
    """One defect (or one class of noise), as a key that different symptoms of it share."""

    kind: str  # value | nan_inf | shape | dtype | crash | error | timeout
    blamed: str  # a target, or "A~B" when neither side is the reference
    op: str  # first diverging node's op type; for failures the stage
    dtype: str = ""
    attrs: str = ""  # coarse attribute class (value kinds); what failed and how (failures)
    method: str = ""  # how the op was found: intermediates | prefix | self-check | output | message
    node: str = ""  # the first diverging node's name in the saved model
    wrong_side: str = ""  # the target whose node disagrees with the op's definition, when known
    noise: bool = False
    tags: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def key(self) -> str:
        if self.noise:
            reason = next((t for t in self.tags if t.startswith("noise:") or t.startswith("known:")), "noise")
            return f"noise|{reason}|{self.blamed}|{self.op}|{self.dtype}"
        return "|".join((self.kind, self.blamed, self.op, self.dtype, self.attrs))

    @property
    def id(self) -> str:
        """Short stable id of the key, usable in file and folder names."""
        return hashlib.sha1(self.key.encode()).hexdigest()[:10]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key, "id": self.id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RootCause":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def blamed_of(targets: tuple[str, ...] | list[str]) -> str:
    """The blamed side of a compared pair: the non-reference target, else both as ``A~B``."""
    if len(targets) == 1:
        return targets[0]
    left, right = targets[0], targets[1]
    if left == REFERENCE:
        return right
    if right == REFERENCE:
        return left
    return f"{left}~{right}"


def failure_root_cause(finding: dict[str, Any]) -> RootCause:
    """A crash, error or timeout: the signature's parts are the identity (``verdict|target|stage|what|line``)."""
    parts = (finding["signature"].split("|", 4) + ["", "", "", ""])[:5]
    verdict, target, stage, what, line = parts
    return RootCause(verdict, target, stage or "worker", attrs=f"{what}|{line}", method="message")


def output_root_cause(finding: dict[str, Any], producers: dict[str, str], dtype: str, note: str) -> RootCause:
    """Fallback identity of a mismatch that could not be localized: the output's producing op."""
    kind = VALUE_KINDS.get(str(finding["verdict"]), str(finding["verdict"]))
    op = producers.get(finding.get("output") or "", "?")
    return RootCause(kind, blamed_of(finding["targets"]), op, dtype, method="output", note=note)


def _bucket(value: Any) -> str:
    if isinstance(value, (bytes, str)):
        return value.decode() if isinstance(value, bytes) else value
    if isinstance(value, float):
        return "0" if value == 0 else "f"
    if isinstance(value, int):
        return "0" if value == 0 else "1" if value == 1 else "-" if value < 0 else "n"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        buckets = {_bucket(v) for v in value}
        return f"{buckets.pop()}s" if len(buckets) == 1 else "mixed"
    return type(value).__name__


def attribute_class(node: onnx.NodeProto, input_dtypes: list[str], input_ranks: list[int]) -> str:
    """A coarse class of what changes the semantics of ``node``: its mode-like attributes bucketed
    (0, 1, many, negative; strings as they are), the target dtype of a Cast, the input dtypes when
    they differ from the output's, and operand ranks for rank-sensitive ops (1, 2, more)."""
    parts = []
    for attribute in sorted(node.attribute, key=lambda a: a.name):
        if attribute.name in SIZE_ATTRIBUTES and not (node.op_type == "Pad" and attribute.name == "value"):
            continue
        value = onnx.helper.get_attribute_value(attribute)
        if attribute.name == "to":
            parts.append(f"to={np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value)).name}")
        elif not isinstance(value, (onnx.TensorProto, onnx.GraphProto)):
            parts.append(f"{attribute.name}={_bucket(value)}")
    if input_dtypes and len(set(input_dtypes)) == 1 and node.op_type == "Cast":
        parts.append(f"from={input_dtypes[0]}")
    if node.op_type in RANK_SENSITIVE and input_ranks:
        parts.append("ranks=" + ",".join(str(r) if r <= 2 else "n" for r in input_ranks))
    return ";".join(parts)


#: Error texts of a runtime rejecting a model on purpose (a documented limitation, not a defect).
LIMITATION_TEXT = re.compile(r"requires a statically known|must be (a )?constant|only supports? |"
                             r"is not supported|not yet supported|dynamic shape|static shape", re.IGNORECASE)


def failure_tags(finding: dict[str, Any], message: str) -> list[str]:
    """Noise tags of a crash, error or timeout: an error that reads "not implemented" or like a
    deliberate rejection of the model is a limitation of the runtime, not a bug."""
    if finding["verdict"] != "error":
        return []
    if looks_unsupported(message):
        return ["noise:looks-unsupported"]
    if LIMITATION_TEXT.search(message or ""):
        return ["noise:limitation"]
    return []


def output_tags(finding: dict[str, Any], analysis: dict[str, Any]) -> list[str]:
    """Noise tags that the outputs alone show (:func:`higen.bugs.analysis.analyze_mismatch`)."""
    tags = []
    if analysis.get("known"):
        tags.append(f"known:{analysis['known']}")
    if analysis.get("noise"):
        tags.append(f"noise:{analysis['noise']}")
    if finding["targets"][0] == REFERENCE and analysis.get("agreeing_targets"):
        tags.append("noise:reference-suspect")
    if analysis.get("inputs_nonfinite"):
        tags.append("noise:inputs-nonfinite")
    if analysis.get("both_finite") is False and str(finding["verdict"]) == "mismatch":
        tags.append("noise:nonfinite-outputs")
    return tags


def node_tags(located: dict[str, Any]) -> list[str]:
    """Noise tags from the first diverging node's own check (:mod:`higen.bugs.nodecheck`): undefined
    behaviour at the node; a difference its sensitivity to input rounding explains; a target that
    matches the definition of every node while PyTorch disagrees."""
    node, check = located.get("node"), located.get("check") or {}
    if node is None:
        return ["noise:self-consistent"] if located.get("consistent_everywhere") else []
    tags = [f"noise:{check['ub']}"] if check.get("ub") else []
    if check.get("rounding"):
        tags.append("noise:resize-coordinate-rounding")
    if check.get("explained"):
        tags.append("noise:discontinuity" if node.get("op_type") in DISCRETE_OPS or node.get("dtype", "f")[:1] in "iub"
                    else "noise:ill-conditioned")
    return tags


def value_root_cause(finding: dict[str, Any], located: dict[str, Any], analysis: dict[str, Any],
                     producers: dict[str, str]) -> RootCause:
    """The identity of a value, NaN/Inf, shape or dtype mismatch from its localization (``located``:
    the analyst's answer, with ``method``) and its output-level ``analysis``.

    It is noise when the first diverging node's own check says so (undefined behaviour, a
    difference its sensitivity explains, a target consistent at every node), or a known semantic
    difference explains it, or the output-level patterns (rounding flips, float16 upstream, float32
    upcast, a suspect reference, non-finite values) do *and* no target was caught computing a node
    against the op's definition on its own inputs: that evidence outweighs the output's look."""
    node = located.get("node")
    if node is None:
        cause = output_root_cause(finding, producers, analysis.get("dtype", ""), located.get("note", ""))
    else:
        verdict = str(node.get("verdict") or finding["verdict"])  # how the node differs, not the output
        kind = VALUE_KINDS.get(verdict, verdict)
        consistent = (located.get("check") or {}).get("consistent") or {}
        wrong = [t for t, ok in consistent.items() if ok is False]
        wrong_side = wrong[0] if len(wrong) == 1 and wrong[0] in finding["targets"] else ""
        # the side caught computing the node against its definition is blamed, whichever pair showed it
        cause = RootCause(kind, wrong_side or blamed_of(finding["targets"]), node["op_type"], node.get("dtype", ""),
                          node.get("attrs", ""), located.get("method", ""), node.get("name", ""),
                          wrong_side, note=located.get("note", ""))
    looks = output_tags(finding, analysis)
    if node is None and "float16" in (analysis.get("narrowest_upstream"), analysis.get("dtype")) \
            and "~" in cause.blamed:
        # two builds of one runtime that differ only with intermediates hidden, on a float16 path:
        # where a float16 chain runs in float32 depends on the graph (ORT's inserted casts, issue 15977)
        looks.append("noise:float16-path-unlocalized")
    strong = [t for t in looks if t.startswith("known:")] + node_tags(located)
    weak = [t for t in looks if not t.startswith("known:")]
    cause.tags = list(dict.fromkeys(strong + weak))  # the strongest evidence first: it names noise keys
    cause.noise = bool(strong) or (bool(weak) and not cause.wrong_side)
    return cause


def graph_form(model: onnx.ModelProto) -> str:
    """The canonical form of a (reduced) graph: its nodes as ``op[attribute class]`` and its
    producer -> consumer edges, both sorted, so that two reductions of one defect found through
    different outputs compare equal."""
    made_by = producer_nodes(model)

    def label(node: onnx.NodeProto) -> str:
        return f"{node.op_type}[{attribute_class(node, [], [])}]"

    nodes = sorted(label(node) for node in model.graph.node if node.op_type != "Constant")
    edges = sorted(f"{label(made_by[name])}>{label(node)}" for node in model.graph.node for name in node.input
                   if name in made_by and made_by[name].op_type != "Constant")
    return ";".join(nodes) + "|" + ";".join(edges)
