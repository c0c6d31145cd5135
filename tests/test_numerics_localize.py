"""``higen localize`` on crafted bug cases with the real runtimes: the node, the proxy, the pass search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from higen.cli.localize import command_localize
from higen.errors import UserError
from higen.numerics.localize import localize_case
from higen.tensors import save_tensors

from conftest import make_model

V = helper.make_tensor_value_info


def write_case(directory: Path, model: onnx.ModelProto, inputs, reference, finding, targets, pairs) -> Path:
    """A bug case folder as the store writes it (format 2), with only the PyTorch outputs saved."""
    (directory / "outputs").mkdir(parents=True)
    onnx.save(model, directory / "model.onnx")
    save_tensors(directory / "inputs.npz", inputs)
    save_tensors(directory / "outputs" / "torch_cpu.npz", reference)
    meta = {"format_version": 2, "verdict": finding["verdict"], "signature": finding["signature"],
            "findings": [finding], "targets": targets, "outcomes": {t: {"status": "ok"} for t in targets},
            "oracle": {"pairs": pairs, "nan_policy": "skip-unstable", "tolerances": {}}}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


@pytest.fixture
def uint8_case(tmp_path) -> Path:
    """Six nodes; only ``add_u8`` computes differently on OpenVINO: its uint8 Add saturates at 255 where
    ONNX Runtime and PyTorch wrap around. Everything upstream agrees, everything downstream differs."""
    nodes = [helper.make_node("Abs", ["x"], ["a"], name="abs"),
             helper.make_node("Mul", ["a", "two"], ["m"], name="scale"),
             helper.make_node("Cast", ["m"], ["q"], to=TensorProto.UINT8, name="to_u8"),
             helper.make_node("Add", ["q", "q"], ["s"], name="add_u8"),
             helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT, name="to_f32"),
             helper.make_node("Sqrt", ["f"], ["y"], name="root")]
    model = make_model(nodes, [V("x", TensorProto.FLOAT, [8])], [V("y", TensorProto.FLOAT, [8])],
                       [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    x = np.array([1, 10, 70, 100, 120, 127, 90, 5], np.float32)
    q = (np.abs(x) * 2).astype(np.uint8)
    y = np.sqrt((q + q).astype(np.uint8).astype(np.float32))  # wraps, as PyTorch does
    finding = {"verdict": "mismatch", "targets": ["torch:cpu", "ov:CPU"], "output": "y",
               "signature": "mismatch|torch:cpu|ov:CPU|Sqrt|float32"}
    return write_case(tmp_path / "u8", model, {"x": x}, {"y": y}, finding, ["ort:cpu:O3", "ov:CPU"],
                      [["torch:cpu", "ort:cpu:O3"], ["torch:cpu", "ov:CPU"], ["ort:cpu:O3", "ov:CPU"]])


@pytest.fixture
def relu_clip_case(tmp_path) -> Path:
    """ORT O3's FuseReluClip fails on a float64 Relu -> Clip ("Unexpected data type for Clip 'min' input
    of 11"): a normal-mode error finding on ort:cpu:O3, compared with ort:cpu:O0."""
    double = TensorProto.DOUBLE
    model = make_model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                        helper.make_node("Clip", ["r", "lo", "hi"], ["y"], name="clip")],
                       [V("x", double, [4])], [V("y", double, [4])],
                       [numpy_helper.from_array(np.array(0.5), "lo"), numpy_helper.from_array(np.array(2.0), "hi")])
    x = np.array([-1, 0.2, 1, 3.0])
    finding = {"verdict": "error", "targets": ["ort:cpu:O3"], "signature": "error|ort:cpu:O3|compile|Fail|..."}
    return write_case(tmp_path / "relu_clip", model, {"x": x}, {"y": np.clip(np.maximum(x, 0), 0.5, 2.0)}, finding,
                      ["ort:cpu:O0", "ort:cpu:O3"], [["ort:cpu:O0", "ort:cpu:O3"], ["torch:cpu", "ort:cpu:O0"]])


def test_names_the_perturbed_node_and_says_no_switch_explains_it(uint8_case):
    report = localize_case(uint8_case)
    assert report["reproduced"] is True
    assert report["proxy"]["target"] == "ort:cpu:O0" and report["proxy"]["agrees_here"] is True
    node = report["node"]
    assert (node["name"], node["op_type"], node["output"], report["method"]) == ("add_u8", "Add", "s", "intermediates")
    assert report["diverging_nodes"] == ["add_u8", "to_f32", "root"]  # upstream agrees, downstream follows
    search = report["pass_search"]["ov:CPU"]
    assert search["smallest"] is None and search["tried"] == 3  # two switches alone, then both together
    assert "no single switch explains it" in search["answer"]
    saved = json.loads((uint8_case / "localization.json").read_text())
    assert saved["node"]["name"] == "add_u8" and saved["answer"] == report["answer"]


def test_pass_search_finds_fuse_relu_clip_on_onnx_runtime(relu_clip_case):
    assert command_localize([str(relu_clip_case)]) == 0
    report = json.loads((relu_clip_case / "localization.json").read_text())
    assert report["compared"] == ["ort:cpu:O0", "ort:cpu:O3"] and report["baseline"]["ort:cpu:O3"] == "error"
    search = report["pass_search"]["ort:cpu:O3"]
    assert search["smallest"] == ["FuseReluClip"]  # the rule, not the rule-based transformer that runs it
    assert set(search["single_fixes"]) == {"FuseReluClip", "Level1_RuleBasedTransformer"}
    assert "FuseReluClip alone" in report["answer"]
    assert "nothing to switch off" in report["pass_search"]["ort:cpu:O0"]["answer"]  # O0 = ORT_DISABLE_ALL


def test_prefix_model_computes_one_intermediate_alone(uint8_case):
    import onnxruntime as ort

    from higen.graph import prefix_model
    from higen.tensors import load_tensors

    prefix = prefix_model(onnx.load(uint8_case / "model.onnx"), "q")
    assert [n.name for n in prefix.graph.node] == ["abs", "scale", "to_u8"] and prefix.graph.output[0].name == "q"
    x = load_tensors(uint8_case / "inputs.npz")["x"]
    session = ort.InferenceSession(prefix.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], (np.abs(x) * 2).astype(np.uint8))


def test_only_the_node_and_explicit_targets(uint8_case):
    report = localize_case(uint8_case, targets=["ort:cpu:O3", "ov:CPU"], pass_search=False)
    assert report["node"]["name"] == "add_u8" and "pass_search" not in report and "proxy" not in report
    with pytest.raises(UserError, match="two targets"):
        localize_case(uint8_case, targets=["ov:CPU"])


def test_a_folder_that_is_no_case_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="meta.json"):
        command_localize([str(tmp_path)])


def test_search_shrinks_a_combination_when_no_single_switch_explains_it(tmp_path):
    """The search logic alone, on a stand-in pool: the finding goes only when B and D are both off,
    and switching C off breaks the build (as LegalizeOps does on TVM)."""
    from higen.backends.base import Outcome
    from higen.numerics.passes import search

    class Pool:
        def switches(self, target, model_path):
            return {"switches": ["A", "B", "C", "D", "E"], "note": "stand-in"}

        def run_with(self, target, model_path, inputs_path, out_dir, options):
            off = set(options["disabled_passes"])
            if "C" in off:
                return Outcome(target, "error", message="cannot emit this operator")
            return Outcome(target, "ok", extra={"fixed": {"B", "D"} <= off})

    result = search(Pool(), "tvm:llvm:O3", tmp_path / "m.onnx", tmp_path / "i.npz", tmp_path / "w",
                    Outcome("tvm:llvm:O3", "ok"), lambda outcome: outcome.extra["fixed"])
    assert result["single_fixes"] == [] and result["not_switchable"] == ["C"]
    assert result["smallest"] == ["B", "D"] and "these 2 together" in result["answer"]
    assert result["tried"] == 5 + 1 + 4  # singles, all usable together, one shrink step per usable switch
