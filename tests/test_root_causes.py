"""Root causes: one injected defect is one root cause whatever output, dtype or pair shows it; the
node check tells defects from ill-conditioning, rounding flips and undefined behaviour; noise is
counted apart and earns no reward. Real ONNX Runtime and ONNX's reference implementation; defects are
injected into the real runtime by rewriting the model in its worker (higen.backends.defects)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

from conftest import make_model
from higen.bugs.capture import capture
from higen.bugs.nodecheck import check_node
from higen.bugs.rootcause import attribute_class, blamed_of, failure_tags, graph_form, value_root_cause
from higen.bugs.store import BugStore

OPSETS = [helper.make_opsetid("", 14)]
NORMAL = [("ort:cpu:O0", "ort:cpu:O3"), ("torch:cpu", "ort:cpu:O0")]
value = helper.make_tensor_value_info


# -- identity, pure ---------------------------------------------------------------------------------
def test_blame_and_attribute_classes():
    assert blamed_of(["torch:cpu", "ort:cpu:O0"]) == "ort:cpu:O0"
    assert blamed_of(["ort:cpu:O0", "ort:cpu:O3"]) == "ort:cpu:O0~ort:cpu:O3"
    grouped = helper.make_node("Conv", ["x", "w"], ["y"], group=4, strides=[1, 1], kernel_shape=[3, 3])
    plain = helper.make_node("Conv", ["x", "w"], ["y"], group=1, strides=[2, 2], kernel_shape=[5, 5])
    assert attribute_class(grouped, [], []) == "group=n;strides=1s"  # kernel sizes are not semantics
    assert attribute_class(plain, [], []) == "group=1;strides=ns"
    cast = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)
    assert attribute_class(cast, ["float16"], [2]) == "to=int32;from=float16"
    matmul = helper.make_node("MatMul", ["a", "b"], ["y"])
    assert attribute_class(matmul, ["float32"] * 2, [2, 1]) != attribute_class(matmul, ["float32"] * 2, [2, 2])


def test_graph_form_ignores_node_order_and_names():
    def chain(names):
        return make_model([helper.make_node("Transpose", ["a"], [names[0]], perm=[1, 0]),
                           helper.make_node("MatMul", [names[0], "b"], [names[1]])],
                          [value("a", TensorProto.FLOAT, [2, 2]), value("b", TensorProto.FLOAT, [2])],
                          [value(names[1], TensorProto.FLOAT, [2])])
    assert graph_form(chain(["t", "y"])) == graph_form(chain(["other", "out"]))
    assert graph_form(chain(["t", "y"])) == "MatMul[];Transpose[]|Transpose[]>MatMul[]"


def finding(targets=("ort:cpu:O0", "ort:cpu:O3")):
    return {"verdict": "mismatch", "targets": list(targets), "output": "y",
            "signature": f"mismatch|{targets[0]}|{targets[1]}|Relu|float32"}


def test_node_evidence_outweighs_how_the_output_looks():
    node = {"name": "/Sigmoid", "op_type": "Sigmoid", "dtype": "float32", "attrs": "", "verdict": "mismatch"}
    caught = {"node": node, "method": "intermediates",
              "check": {"consistent": {"ort:cpu:O0": True, "ort:cpu:O3": False}, "explained": False, "ub": ""}}
    looks_like_rounding = {"noise": "rounding-boundary", "dtype": "float32"}
    cause = value_root_cause(finding(), caught, looks_like_rounding, {"y": "Relu"})
    assert not cause.noise and cause.op == "Sigmoid" and cause.blamed == "ort:cpu:O3"  # the wrong side
    assert cause.key == "value|ort:cpu:O3|Sigmoid|float32|"
    uncaught = {"node": node, "method": "prefix", "check": {}}
    assert value_root_cause(finding(), uncaught, looks_like_rounding, {"y": "Relu"}).noise
    explained = {**caught, "check": {"consistent": {"ort:cpu:O0": True, "ort:cpu:O3": True}, "explained": True}}
    cause = value_root_cause(finding(), explained, {}, {"y": "Relu"})
    assert cause.noise and cause.key.startswith("noise|noise:ill-conditioned|")
    known = value_root_cause(finding(), caught, {"known": "ov-uint8-saturation"}, {"y": "Relu"})
    assert known.noise  # a documented semantic difference is never a bug
    lost = value_root_cause(finding(), {"node": None, "note": "analyst timeout"}, {"dtype": "float32"}, {"y": "Relu"})
    assert not lost.noise and lost.op == "Relu" and lost.method == "output"


def test_errors_that_are_limitations_are_noise():
    error = {"verdict": "error", "targets": ["tvm:llvm:O3"], "signature": "error|tvm:llvm:O3|compile|E|x"}
    assert failure_tags(error, "Slice requires a statically known input rank") == ["noise:limitation"]
    assert failure_tags(error, "Could not find an implementation for Tan(7) node") == ["noise:looks-unsupported"]
    assert failure_tags(error, "Check failed: (idx < size) is false") == []
    assert failure_tags({**error, "verdict": "crash"}, "is not supported") == []  # a crash is never noise


# -- the node check, with ONNX's reference implementation -------------------------------------------
def test_a_node_that_contradicts_its_definition_is_caught():
    node = helper.make_node("Sigmoid", ["x"], ["y"])
    x = np.linspace(-3, 3, 12, dtype=np.float32)
    right = 1 / (1 + np.exp(-x.astype(np.float64)))
    verdict = check_node(node, OPSETS, {"a": ([x], [right.astype(np.float32)]),
                                        "b": ([x], [(right * 1.0625).astype(np.float32)])}, {})
    assert verdict.consistent == {"a": True, "b": False} and verdict.explained is False and not verdict.ub


def test_ill_conditioning_and_rounding_flips_are_explained():
    tan = helper.make_node("Tan", ["x"], ["y"])
    pole = np.array([1.5703125, 0.5], np.float16)  # 1.5703125 is one float16 ulp below pi/2
    nudged = np.nextafter(pole, np.float16(2)).astype(np.float16)
    left, right = (np.tan(v.astype(np.float64)).astype(np.float16) for v in (pole, nudged))
    assert abs(float(left[0]) - float(right[0])) > 100  # far beyond float16's tolerance ...
    verdict = check_node(tan, OPSETS, {"a": ([pole], [left]), "b": ([nudged], [right])}, {})
    assert verdict.explained  # ... yet one input ulp explains it
    floor = helper.make_node("Floor", ["x"], ["y"])
    below = np.array([2.9999998, 1.5], np.float32)
    exact = np.array([3.0, 1.5], np.float32)
    verdict = check_node(floor, OPSETS, {"a": ([below], [np.floor(below)]), "b": ([exact], [np.floor(exact)])}, {})
    assert verdict.consistent == {"a": True, "b": True} and verdict.explained


def test_undefined_behaviour_is_named():
    cast = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)
    x = np.array([1.5, 3e9], np.float32)
    verdict = check_node(cast, OPSETS, {"a": ([x], [np.array([1, -2147483648], np.int32)])}, {})
    assert verdict.ub == "ub:float-to-int-out-of-range"
    argmax = helper.make_node("ArgMax", ["x"], ["y"], axis=0, keepdims=0)
    x = np.array([1.0, np.nan, 2.0], np.float32)
    assert check_node(argmax, OPSETS, {"a": ([x], [np.array(1, np.int64)])}, {}).ub == "ub:nan-into-argmax"
    add = helper.make_node("Add", ["a", "b"], ["y"])
    big = np.array([2**30, 5], np.int32)
    assert check_node(add, OPSETS, {"a": ([big, big], [big + big])}, {}).ub == "ub:integer-overflow"


# -- identification in the real runtime --------------------------------------------------------------
def sigmoid_through(tail: str) -> tuple:
    """Sigmoid, then a different tail to the graph output each time (so the old signatures differ)."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"])]
    if tail == "relu":
        nodes.append(helper.make_node("Relu", ["s"], ["y"]))
        out = value("y", TensorProto.FLOAT, [3, 4])
    else:
        nodes.append(helper.make_node("Cast", ["s"], ["y"], to=TensorProto.DOUBLE))
        out = value("y", TensorProto.DOUBLE, [3, 4])
    model = make_model(nodes, [value("x", TensorProto.FLOAT, [3, 4])], [out])
    return model, {"x": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)}


@pytest.mark.parametrize("defective", ["ort:cpu:O3", "ort:cpu:O0"])
def test_one_defect_through_outputs_dtypes_and_pairs_is_one_root_cause(defective, tmp_path, monkeypatch):
    monkeypatch.setenv("HIGEN_DEFECTS", f"{defective}=Sigmoid@float32")
    store = BugStore(tmp_path / "bug_cases", run_root=tmp_path)
    keys, signatures = set(), set()
    for tail in ("relu", "cast"):
        model, inputs = sigmoid_through(tail)
        judgement, _ = capture(model, inputs, ["ort:cpu:O0", "ort:cpu:O3"], store, pairs=NORMAL)
        assert judgement.findings
        for found in judgement.findings:
            signatures.add(found.signature)
            keys.add(found.root_cause["key"])
            assert found.root_cause["node"] == "" or found.root_cause["op"] == "Sigmoid"
    assert len(signatures) >= 2  # the output op and dtype changed the signature ...
    assert keys == {f"value|{defective}|Sigmoid|float32|"}  # ... not the root cause
    index = json.loads((tmp_path / "root_causes.json").read_text())
    assert list(index) == list(keys) and set(index[next(iter(keys))]["signatures"]) == signatures


def test_a_campaign_counts_and_rewards_root_causes(tmp_path):
    """A short real campaign with four injected defects: each that shows through several signatures
    is one credible root cause, every credible value root cause is an injected one, noise earns no
    reward, and the first case of each defect is reduced in the background to the defective op."""
    defects = {("Sigmoid", "float32"), ("Sin", "float64"), ("Abs", "float32"), ("Tanh", "float32")}
    env = {**os.environ, "HIGEN_DEFECTS": "ort:cpu:O3=" + ",".join(f"{op}@{dt}" for op, dt in defects),
           "HIGEN_CACHE_DIR": str(tmp_path / "cache")}  # its own op-support probe: all ops, whatever ran before
    command = [sys.executable, "-m", "higen.main", "--compiler", "ort", "--strategy", "random", "--seed", "2",
               "--max-tests", "120", "--run-root", str(tmp_path), "--no-progress", "--reduce-budget", "30"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "root_causes.json").is_file(), (done.stdout + done.stderr)[-3000:]
    causes = json.loads((tmp_path / "root_causes.json").read_text())
    injected = {key: c for key, c in causes.items() if (c.get("op"), c.get("dtype")) in defects and not c["noise"]}
    shown_many = [c for c in injected.values() if len(c["signatures"]) >= 2]
    assert len(shown_many) >= 2, causes  # several signatures each, so the test can tell
    for op, dtype in defects:
        assert len([c for c in injected.values() if (c["op"], c["dtype"]) == (op, dtype)]) <= 1
    credible_values = [c for c in causes.values() if not c["noise"] and c.get("kind") == "value"]
    assert all((c["op"], c["dtype"]) in defects and c["blamed"] == "ort:cpu:O3" for c in credible_values), causes
    lines = [json.loads(line) for line in (tmp_path / "1" / "training.log").read_text().splitlines()]
    tests = [line for line in lines if line.get("event") == "test"]
    end = next(line for line in lines if line.get("event") == "end")
    assert end["bugs"] == sum(not c["noise"] for c in causes.values()) > 0
    assert f"{end['bugs']} bugs ({end['noise_causes']} root causes of noise" in done.stdout + done.stderr
    assert sum(t["new_bugs"] != [] for t in tests) == end["bugs"]
    reduced = [c["reduced"] for c in injected.values() if c.get("reduced", {}).get("reproduced")]
    assert reduced and all(r["nodes_after"] <= 3 for r in reduced)


def test_a_bug_already_reported_upstream_is_tagged(tmp_path):
    """ORT's FuseReluClip failure on a float64 Relu -> Clip is issue #11836: still a bug, tagged so
    that nobody files it again."""
    from test_bugs_common import RELU_CLIP_PAIRS, RELU_CLIP_TARGETS, relu_clip_chain

    store = BugStore(tmp_path / "bug_cases", run_root=tmp_path)
    judgement, case = capture(*relu_clip_chain(), RELU_CLIP_TARGETS, store, pairs=RELU_CLIP_PAIRS)
    (error,) = [f for f in judgement.findings if str(f.verdict) == "error"]
    assert not error.root_cause["noise"] and "upstream:ort-11836" in error.root_cause["tags"]


def test_an_adversarial_model_cannot_stall_the_record_path(tmp_path):
    """A huge constant pooled with a huge kernel: ONNX's reference implementation would take hours on
    it. Identification runs in the analyst worker under the test's timeout, so recording ends with
    the output-level identity and a note saying why, instead of hanging the campaign."""
    from onnx import numpy_helper

    nodes = [helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[512, 512]),
             helper.make_node("ReduceMean", ["p"], ["m"], keepdims=1),
             helper.make_node("Add", ["x", "m"], ["y"])]
    constant = numpy_helper.from_array(np.ones((1, 1, 1024, 1024), np.float32), "c")
    model = make_model(nodes, [value("x", TensorProto.FLOAT, [1, 1, 4, 4])], [value("y", TensorProto.FLOAT, [1, 1, 4, 4])],
                       [constant])
    inputs = {"x": np.zeros((1, 1, 4, 4), np.float32)}
    store = BugStore(tmp_path / "bug_cases", run_root=tmp_path)
    judgement, case = capture(model, inputs, ["fault:garbage"], store, reference={"y": np.ones((1, 1, 4, 4), np.float32)},
                              pairs=[("torch:cpu", "fault:garbage")], timeout_s=5)
    (finding,) = judgement.findings
    assert finding.root_cause["method"] == "output" and "timeout" in finding.root_cause["note"]
    assert case and (tmp_path / "bug_cases" / case / "meta.json").is_file()


def test_argmax_is_judged_by_the_value_it_picks():
    """Float16 values that tie after rounding may differ in the float32 the runtime compared (ONNX
    Runtime computes float16 chains in float32 where it lacks a float16 kernel): a pick within an ulp
    of the maximum is consistent; a pick far below it is not; float32 picks must be exact."""
    argmax = helper.make_node("ArgMax", ["x"], ["y"], axis=0, keepdims=0)
    tied = np.array([[1.0, 1.429], [2.0, 1.429], [0.5, 1.428]], np.float16)
    assert check_node(argmax, OPSETS, {"a": ([tied], [np.array([1, 1])])}, {}).consistent == {"a": True}
    assert check_node(argmax, OPSETS, {"a": ([tied], [np.array([0, 1])])}, {}).consistent == {"a": False}
    close = np.array([[1.0], [1.0000001]], np.float32)
    assert check_node(argmax, OPSETS, {"a": ([close], [np.array([0])])}, {}).consistent == {"a": False}


def test_reductions_to_one_graph_make_one_bug(tmp_path):
    """Two root causes of one kind and blamed side whose background reductions have the same
    canonical form are one defect found through different routes: the later is an alias."""
    store = BugStore(tmp_path / "bug_cases", run_root=tmp_path)
    index = {key: {"kind": "value", "blamed": "ort:cpu:O3", "count": 1, "signatures": [], "cases": []}
             for key in ("value|ort:cpu:O3|Sigmoid|float32|", "value|ort:cpu:O3|Mul|float32|", "crash|ort:cpu:O3|x")}
    index["crash|ort:cpu:O3|x"]["kind"] = "crash"
    store.causes.save(index)
    form = {"reproduced": True, "form": "Sigmoid[]|", "nodes_before": 12, "nodes_after": 1}
    assert store.note_reduction("value|ort:cpu:O3|Sigmoid|float32|", form) is None
    assert store.note_reduction("value|ort:cpu:O3|Mul|float32|", form) == "value|ort:cpu:O3|Sigmoid|float32|"
    assert store.note_reduction("crash|ort:cpu:O3|x", form) is None  # another kind: another bug
    assert store.note_reduction("value|ort:cpu:O3|Sigmoid|float32|", {"reproduced": False}) is None
    saved = json.loads((tmp_path / "root_causes.json").read_text())
    assert saved["value|ort:cpu:O3|Mul|float32|"]["reduced"]["nodes_after"] == 1
    assert "alias_of" not in saved["value|ort:cpu:O3|Sigmoid|float32|"]
