"""The standalone reproducer of ``higen report``: Python source that rebuilds a case's graph node by
node with ``onnx.helper`` (small arrays as literals, larger ones as base64 of their bytes, huge
inputs as a seeded stand-in), runs the expected and the observed side, then the observed side with
each switch set localization found, and prints ``BUG SHOWS`` (exit 0) while the bug is there. It
needs numpy, onnx and the runtimes involved: nothing from HiGen.
"""

from __future__ import annotations

import base64
import inspect
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from higen.backends.base import REFERENCE
from higen.bugs import repro_template
from higen.bugs.case import BugCase
from higen.bugs.standalone import FAILURES, bug_facts
from higen.errors import UserError
from higen.oracle import first_meaningful_line

#: Arrays up to this many elements are written as literals; larger ones as base64 of their bytes.
INLINE_ELEMENTS = 64
#: Beyond this many bytes an input is not embedded: a seeded stand-in is generated instead.
EMBED_BYTES = 1 << 20
PACKAGES = {"ort": "onnxruntime", "ov": "openvino", "tvm": "apache-tvm"}


class ReportError(UserError):
    """A case that cannot be written up; one line that says why."""


@dataclass
class Subject:
    """What the report is about: the case whose graph the repro rebuilds, its finding and the sides."""

    case: BugCase  # the original case (versions, environment, localization)
    source: BugCase  # where the graph comes from: ``reduced/`` when it exists, else ``case``
    finding: dict[str, Any]
    root_cause: dict[str, Any]
    blamed: str  # a target, or "A~B" when neither side is the reference
    expected: str  # the side whose values are taken as right ("" for failures)
    observed: str  # the failing or deviating target


def runtime_of(target: str) -> str:
    """``ort:cpu:O3`` and a pinned release's ``ort@1.20.1:cpu:O3`` -> ``ort``."""
    return target.split(":")[0].split("@")[0]


# -- the graph as onnx.helper code --------------------------------------------------------------
def _scalar(value: Any) -> str:
    if isinstance(value, float) and not np.isfinite(value):
        return "float('nan')" if np.isnan(value) else ("float('inf')" if value > 0 else "-float('inf')")
    return repr(value)


def _nested(value: Any) -> str:
    return f"[{', '.join(_nested(v) for v in value)}]" if isinstance(value, list) else _scalar(value)


def array_code(array: np.ndarray, seed: int = 0) -> str:
    """Python source that recreates ``array``: a literal, base64 of its bytes, or (too large) a seeded
    stand-in with a comment that says so."""
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        raise ReportError(f"an array of dtype {dtype} cannot be written into the script")
    kind = f"np.{dtype.name}"
    if array.size <= INLINE_ELEMENTS:
        return f"np.array({_nested(array.tolist())}, dtype={kind})"
    if array.nbytes <= EMBED_BYTES:
        encoded = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()
        return f"np.frombuffer(base64.b64decode({encoded!r}), dtype={kind}).reshape({list(array.shape)}).copy()"
    rng = "np.random.default_rng({})".format(seed)
    values = (f"{rng}.integers(0, 2, {list(array.shape)})" if dtype.kind in "biu"
              else f"{rng}.standard_normal({list(array.shape)})")
    return f"{values}.astype({kind})  # seeded stand-in: the recorded {array.nbytes} bytes are too large to embed"


def _type_code(value: onnx.ValueInfoProto) -> str:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise ReportError(f"value {value.name!r} is not a tensor; only tensor graphs can be written as helper code")
    dims = None
    if tensor.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    dtype = onnx.TensorProto.DataType.Name(tensor.elem_type)
    return f"helper.make_tensor_value_info({value.name!r}, TensorProto.{dtype}, {dims!r})"


def _attribute_code(attribute: onnx.AttributeProto) -> str:
    if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS,
                          onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS,
                          onnx.AttributeProto.TYPE_PROTO, onnx.AttributeProto.TYPE_PROTOS):
        raise ReportError(f"attribute {attribute.name!r} ({onnx.AttributeProto.AttributeType.Name(attribute.type)}) "
                          "cannot be written as helper code")
    if attribute.type == onnx.AttributeProto.TENSOR:
        return f"numpy_helper.from_array({array_code(numpy_helper.to_array(attribute.t))}, {attribute.t.name!r})"
    if attribute.type == onnx.AttributeProto.TENSORS:
        return "[" + ", ".join(f"numpy_helper.from_array({array_code(numpy_helper.to_array(t))})"
                               for t in attribute.tensors) + "]"
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return repr(value.decode())
    if isinstance(value, list):
        return _nested([v.decode() if isinstance(v, bytes) else v for v in value])
    return _scalar(value)


def _node_code(node: onnx.NodeProto) -> str:
    parts = [repr(node.op_type), repr(list(node.input)), repr(list(node.output))]
    if node.name:
        parts.append(f"name={node.name!r}")
    if node.domain:
        parts.append(f"domain={node.domain!r}")
    for attribute in node.attribute:
        if not attribute.name.isidentifier():
            raise ReportError(f"attribute name {attribute.name!r} is not a Python identifier")
        parts.append(f"{attribute.name}={_attribute_code(attribute)}")
    return f"helper.make_node({', '.join(parts)})"


def model_code(model: onnx.ModelProto) -> str:
    """``def build_model()`` that rebuilds ``model`` with onnx.helper (initializers inline)."""
    graph = model.graph
    weights = {tensor.name for tensor in graph.initializer}
    lines = ["def build_model() -> onnx.ModelProto:",
             "    inputs = [", *(f"        {_type_code(v)}," for v in graph.input if v.name not in weights), "    ]",
             "    outputs = [", *(f"        {_type_code(v)}," for v in graph.output), "    ]",
             "    initializers = ["]
    lines += [f"        numpy_helper.from_array({array_code(numpy_helper.to_array(t), i)}, {t.name!r}),"
              for i, t in enumerate(graph.initializer)]
    lines += ["    ]", "    nodes = [", *(f"        {_node_code(node)}," for node in graph.node), "    ]"]
    opsets = ", ".join(f"helper.make_opsetid({o.domain!r}, {o.version})" for o in model.opset_import)
    lines += [f"    graph = helper.make_graph(nodes, {graph.name or 'repro'!r}, inputs, outputs, initializers)",
              f"    model = helper.make_model(graph, opset_imports=[{opsets}], ir_version={model.ir_version})",
              "    onnx.checker.check_model(model, full_check=True)", "    return model"]
    return "\n".join(lines)


def inputs_code(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> str:
    weights = {tensor.name for tensor in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in weights]
    missing = [name for name in names if name not in feeds]
    if missing:
        raise ReportError(f"inputs.npz lacks the graph input(s) {', '.join(missing)}")
    body = [f"        {name!r}: {array_code(feeds[name], i)}," for i, name in enumerate(names)]
    return "\n".join(["def make_inputs() -> dict[str, np.ndarray]:", "    return {", *body, "    }"])


# -- the rest of the script: one runner per runtime, the check ----------------------------------
RUNNERS = {
    "ort": '''def run_ort(model, feeds, device, opt, switched_off=()):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if opt == "O3"
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider],
                                   disabled_optimizers=list(switched_off) or None)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))''',
    "ov": '''def run_ov(model, feeds, device, opt, switched_off=()):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", **dict(item.split("=", 1) for item in switched_off)}
    compiled = core.compile_model(core.read_model(model.SerializeToString()), device, config)
    result = compiled({name: np.require(value, requirements="C") for name, value in feeds.items()})  # 0-d stays 0-d
    return {value.name: np.array(result[compiled.output(value.name)]) for value in model.graph.output}''',
    "tvm": '''def run_tvm(model, feeds, device, opt, switched_off=()):
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    module = from_onnx(model, keep_params_in_input=False, sanitize_input_names=False)
    target = tvm.target.Target("llvm") if device == "llvm" else tvm.target.Target("cuda", host="llvm")
    where = tvm.cpu(0) if device == "llvm" else tvm.cuda(0)
    with tvm.transform.PassContext(opt_level=int(opt[1:]), disabled_pass=list(switched_off)):
        pipeline = relax.get_default_pipeline(target) if opt == "O3" else "default"
        machine = relax.VirtualMachine(tvm.compile(module, target=target, relax_pipeline=pipeline), where)
    args = [tvm.runtime.tensor(np.require(feeds[p.name], requirements="C"), where) for p in module["main"].params]
    result = machine["main"](*args)
    values = [result] if len(model.graph.output) == 1 else list(result)
    return {o.name: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for o, v in zip(model.graph.output, values)}''',
    REFERENCE: '''def run_reference(model, feeds, *unused):
    """onnx's reference evaluator stands in for PyTorch, HiGen's reference (no PyTorch needed)."""
    from onnx.reference import ReferenceEvaluator

    names = [value.name for value in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(names, feeds)))''',
}

MAIN = '''def run(target, model, feeds, switched_off=()):
    if target == "torch:cpu":
        return run_reference(model, feeds)
    runtime, device, *opt = target.split(":")
    runner = globals()[f"run_{runtime.split('@')[0]}"]  # ort@1.20.1: HiGen ran that release; run the installed one
    return runner(model, feeds, device, opt[0] if opt else "", switched_off)


def preview(values) -> str:
    flat = np.asarray(values).ravel()
    return np.array2string(flat[:8], precision=6) + (f" ... ({flat.size} values)" if flat.size > 8 else "")


def show(label, expected, observed) -> str | None:
    found = disagreement(expected, observed, *TOLERANCE)
    error = ""
    if found == "mismatch":
        diff = np.abs(observed.astype(np.float64) - expected.astype(np.float64))
        rel = diff / np.maximum(np.abs(expected.astype(np.float64)), np.finfo(np.float64).tiny)
        error = f" (max abs error {np.nanmax(diff):.6g}, max rel error {np.nanmax(rel):.6g})"
    print(f"  {label}: {preview(observed)} -> {found or 'agrees'}{error}")
    return found


def main() -> int:
    model, feeds = build_model(), make_inputs()
    if KIND in FAILURES:
        for switched_off in ABLATION:  # first, as a crash ends the script
            try:
                run(OBSERVED, model, feeds, switched_off)
                print(f"{OBSERVED} with {', '.join(switched_off)} off: runs")
            except Exception as error:
                print(f"{OBSERVED} with {', '.join(switched_off)} off: {type(error).__name__} too")
        print(f"{OBSERVED}: HiGen saw {KIND} ({SAW})", flush=True)
        try:
            run(OBSERVED, model, feeds)
        except Exception as error:
            print(f"{type(error).__name__}: {str(error).strip()[:2000]}")
            if KIND == "error" and re.search(MESSAGE, str(error), re.S):
                print(f"BUG SHOWS: {OBSERVED} fails with the recorded error")
                return 0
            print(f"bug does not show: {OBSERVED} fails differently")
            return 1
        print(f"bug does not show: {OBSERVED} ran")
        return 1
    expected = run(EXPECTED, model, feeds)[OUTPUT]
    print(f"output {OUTPUT}, expected ({EXPECTED}): {preview(expected)}")
    found = show(f"observed ({OBSERVED})", expected, run(OBSERVED, model, feeds)[OUTPUT])
    for switched_off in ABLATION:
        fixed = run(OBSERVED, model, feeds, switched_off)[OUTPUT]
        show(f"{OBSERVED} with {', '.join(switched_off)} off", expected, fixed)
    if found == KIND:
        print(f"BUG SHOWS: {OBSERVED} gives a {found} on {OUTPUT} (rtol, atol = {TOLERANCE})")
        return 0
    print(f"bug does not show: {found or 'the outputs agree'} (recorded: {KIND})")
    return 1


if __name__ == "__main__":
    sys.exit(main())'''


def message_pattern(message: str) -> str:
    """A regex for a recorded error: its last words in order (numbers, paths and names vary)."""
    words = re.findall(r"[A-Za-z_']{4,}", first_meaningful_line(message))
    return ".*".join(re.escape(w) for w in words[-6:]) or "."


def ablation_sets(localization: dict[str, Any] | None, target: str) -> list[list[str]]:
    """The switch sets that made the finding go away on ``target`` (the smallest first)."""
    found = ((localization or {}).get("pass_search") or {}).get(target) or {}
    sets = [found["smallest"]] if found.get("smallest") else []
    return sets + [[s] for s in found.get("single_fixes", []) if [s] not in sets][:2]


def script(subj: Subject, model: onnx.ModelProto, feeds: dict[str, np.ndarray],
           localization: dict[str, Any] | None, title: str) -> str:
    """The standalone reproducer: numpy, onnx and the runtime(s) involved, nothing from HiGen."""
    kind = subj.finding["verdict"]
    facts = bug_facts(subj.source.path, subj.source.meta, subj.finding)
    runtimes = [REFERENCE if t == REFERENCE else runtime_of(t) for t in (subj.expected, subj.observed) if t]
    needs = sorted({PACKAGES[r] for r in runtimes if r in PACKAGES})
    outcome = subj.source.meta["outcomes"].get(subj.observed, {})
    constants = {"KIND": kind, "EXPECTED": subj.expected, "OBSERVED": subj.observed,
                 "OUTPUT": subj.finding.get("output", ""), "TOLERANCE": tuple(facts.get("tolerance", (0.0, 0.0))),
                 "ABLATION": ablation_sets(localization, subj.observed), "FAILURES": FAILURES}
    if kind in FAILURES:
        saw = f"{outcome.get('stage', '')} {outcome.get('signal') or outcome.get('error_type', '')}"
        constants.update(SAW=saw.strip(), MESSAGE=message_pattern(outcome.get("message", "")))
    header = [f'"""{title}', "", f"Standalone repro written by `higen report` from HiGen case {subj.case.path.name}.",
              f"Needs numpy, onnx{''.join(', ' + n for n in needs)}. Prints BUG SHOWS (exit 0) while the bug is there.",
              '"""', "", "import base64", "import re", "import sys", "", "import numpy as np", "import onnx",
              "from onnx import TensorProto, helper, numpy_helper", ""]
    header += [f"{name} = {value!r}" for name, value in constants.items()]
    runners = [RUNNERS[r] for r in dict.fromkeys(runtimes) if r in RUNNERS]
    body = [model_code(model), inputs_code(model, feeds), *runners,
            inspect.getsource(repro_template.disagreement).strip(), MAIN]
    return "\n".join(header) + "\n\n\n" + "\n\n\n".join(body) + "\n"
