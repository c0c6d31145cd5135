"""The TVM (Relax) backend and the integer-constant folding it relies on, against real TVM and ORT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

from higen.backends.base import DeviceUnavailable, Target  # noqa: E402
from higen.backends.tvm import TvmBackend, create  # noqa: E402
from higen.onnx_fold import fold_integer_constants  # noqa: E402
from higen.tensors import load_tensors, save_tensors  # noqa: E402

info = helper.make_tensor_value_info


def make_model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def pad_chain_model() -> onnx.ModelProto:
    """Pad whose pads come from Constant -> Cast -> Concat, plus Shape(x) -> Gather -> Sub."""
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([0.0, 1.0], np.float32))),
        helper.make_node("Cast", ["c"], ["c_int"], to=TensorProto.INT64),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "index"], ["dim"], axis=0),
        helper.make_node("Sub", ["dim", "dim"], ["zero"]),
        helper.make_node("Concat", ["zero", "c_int", "zero"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["padded"]),
        helper.make_node("Relu", ["padded"], ["y"]),
    ]
    index = numpy_helper.from_array(np.array([1], np.int64), "index")
    return make_model(nodes, [info("x", TensorProto.FLOAT, [2, 3])], [info("y", TensorProto.FLOAT, [3, 3])], [index])


def two_in_two_out_model() -> onnx.ModelProto:
    """A float32 model with inputs a, b (in that graph order) and outputs sum_out, prod_out."""
    weight = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "w")
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Tanh", ["s"], ["t"]),
        helper.make_node("MatMul", ["t", "w"], ["mm"]),
        helper.make_node("Sigmoid", ["mm"], ["sum_out"]),
        helper.make_node("Mul", ["a", "t"], ["m"]),
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Exp", ["r"], ["prod_out"]),
    ]
    return make_model(
        nodes,
        [info("a", TensorProto.FLOAT, [2, 3]), info("b", TensorProto.FLOAT, [2, 3])],
        [info("sum_out", TensorProto.FLOAT, [2, 4]), info("prod_out", TensorProto.FLOAT, [2, 3])],
        [weight],
    )


@pytest.fixture(scope="module")
def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # Deliberately in the opposite order to the graph's inputs.
    return {"b": rng.standard_normal((2, 3)).astype(np.float32), "a": rng.standard_normal((2, 3)).astype(np.float32)}


def test_fold_pad_chain_matches_original():
    model = pad_chain_model()
    folded = fold_integer_constants(model)
    onnx.checker.check_model(folded, full_check=True)
    assert [node.op_type for node in folded.graph.node] == ["Pad", "Relu"]
    pads = {init.name: numpy_helper.to_array(init) for init in folded.graph.initializer}["pads"]
    assert pads.tolist() == [0, 0, 1, 0]
    assert [value.name for value in folded.graph.input] == ["x"]
    assert [value.name for value in folded.graph.output] == ["y"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    np.testing.assert_array_equal(run_ort(folded, {"x": x})["y"], run_ort(model, {"x": x})["y"])


def test_fold_leaves_float_graph_alone():
    model = two_in_two_out_model()
    folded = fold_integer_constants(model)
    assert folded is not model
    assert folded.graph.node == model.graph.node and folded.graph.initializer == model.graph.initializer


def test_folded_pad_chain_compiles_in_tvm(tmp_path: Path):
    path = tmp_path / "pad.onnx"
    onnx.save(pad_chain_model(), path)
    backend = TvmBackend(Target.parse("tvm:llvm:O3"))
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    out = backend.run(backend.compile(str(path)), {"x": x})
    np.testing.assert_array_equal(out["y"], run_ort(pad_chain_model(), {"x": x})["y"])


@pytest.mark.parametrize("opt", ["O0", "O3"])
def test_multi_input_multi_output_matches_ort(tmp_path: Path, feeds, opt: str):
    model = two_in_two_out_model()
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    backend = create(Target.parse(f"tvm:llvm:{opt}"))
    assert backend.describe()["runtime"] == "tvm"
    outputs = backend.run(backend.compile(str(path)), feeds)
    expected = run_ort(model, feeds)
    assert list(outputs) == ["sum_out", "prod_out"]
    for name, value in expected.items():
        assert outputs[name].dtype == value.dtype and outputs[name].shape == value.shape
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opt", ["O0", "O3"])
def test_o3_fuses_and_o0_does_not(tmp_path: Path, feeds, opt: str):
    """O3 is the target's optimizing Relax pipeline (FoldConstant, FuseOps, FuseTIR); O0 the generic one
    without fusion. Both compute the same numbers, so normal mode compares fused against unfused code."""
    from tvm.ir.instrument import pass_instrument

    @pass_instrument
    class Ran:
        def __init__(self):
            self.names: set[str] = set()

        def run_before_pass(self, mod, info):
            self.names.add(info.name)

    ran = Ran()
    model = two_in_two_out_model()
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    backend = TvmBackend(Target.parse(f"tvm:llvm:{opt}"), instruments=[ran])
    outputs = backend.run(backend.compile(str(path)), feeds)
    fusion = {"FoldConstant", "FuseOps", "FuseTIR"}
    assert ("LegalizeOps" in ran.names) and (fusion <= ran.names if opt == "O3" else not fusion & ran.names)
    assert backend.describe()["pipeline"] == ("target-fused" if opt == "O3" else "generic")
    for name, value in run_ort(model, feeds).items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)


def test_scalar_bool_and_shape_outputs(tmp_path: Path):
    """0-d inputs stay 0-d, bool works, and a Shape graph output (a TVM Shape, not a Tensor) is int64."""
    model = make_model(
        [helper.make_node("Mul", ["x", "scale"], ["scaled"]), helper.make_node("Not", ["flag"], ["flipped"]),
         helper.make_node("Shape", ["x"], ["x_shape"])],
        [info("x", TensorProto.FLOAT, [2, 3]), info("scale", TensorProto.FLOAT, []), info("flag", TensorProto.BOOL, [3])],
        [info("scaled", TensorProto.FLOAT, [2, 3]), info("flipped", TensorProto.BOOL, [3]),
         info("x_shape", TensorProto.INT64, [2])],
    )
    path = tmp_path / "mixed.onnx"
    onnx.save(model, path)
    feeds = {"flag": np.array([True, False, True]), "scale": np.array(2.5, np.float32),
             "x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    backend = TvmBackend(Target.parse("tvm:llvm:O0"))
    outputs = backend.run(backend.compile(str(path)), feeds)
    for name, value in run_ort(model, feeds).items():
        assert outputs[name].dtype == value.dtype, name
        np.testing.assert_array_equal(outputs[name], value)


@pytest.mark.parametrize("case", ["missing_op", "float16_atan"])
def test_unsupported_is_classified(tmp_path: Path, case: str):
    if case == "missing_op":  # the Relax ONNX frontend has no converter for Det
        model = make_model([helper.make_node("Det", ["x"], ["y"])],
                           [info("x", TensorProto.FLOAT, [3, 3])], [info("y", TensorProto.FLOAT, [])])
    else:  # LLVM codegen has no float16 atan intrinsic
        model = make_model([helper.make_node("Atan", ["x"], ["y"])],
                           [info("x", TensorProto.FLOAT16, [4])], [info("y", TensorProto.FLOAT16, [4])])
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, path)
    backend = TvmBackend(Target.parse("tvm:llvm:O3"))
    with pytest.raises(Exception) as caught:
        backend.compile(str(path))
    assert backend.is_unsupported(caught.value), f"{type(caught.value).__name__}: {caught.value}"


def test_other_errors_stay_errors():
    backend = TvmBackend(Target.parse("tvm:llvm:O0"))
    assert not backend.is_unsupported(ValueError("Check failed: wrong result shape"))
    assert not backend.is_unsupported(RuntimeError("LLVM module verification failed"))


def test_cuda_without_gpu_is_unavailable():
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("a CUDA device is present")
    with pytest.raises(DeviceUnavailable):
        TvmBackend(Target.parse("tvm:cuda:O3"))


def test_bad_target_rejected():
    with pytest.raises(ValueError):
        TvmBackend(Target.parse("tvm:llvm:O2"))


@pytest.mark.slow
def test_through_real_worker(tmp_path: Path, feeds):
    from higen.backends.pool import BackendPool

    model = two_in_two_out_model()
    model_path, inputs_path = tmp_path / "model.onnx", tmp_path / "inputs.npz"
    onnx.save(model, model_path)
    save_tensors(inputs_path, feeds)
    target = Target.parse("tvm:llvm:O3")
    with BackendPool([target], tmp_path / "logs", timeout_s=120) as pool:
        assert pool.describe()[target.name]["runtime"] == "tvm"
        outcome = pool.run(model_path, inputs_path, tmp_path)[target.name]
    assert outcome.ok, (outcome.status, outcome.message, outcome.log_tail)
    outputs = load_tensors(outcome.outputs_path)
    for name, value in run_ort(model, feeds).items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)
