"""The OpenVINO backend against the real runtime (no mocks): results, dtypes, error classes, workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ov = pytest.importorskip("openvino")
ort = pytest.importorskip("onnxruntime")

from higen.backends.base import DeviceUnavailable, Target, Unsupported  # noqa: E402
from higen.backends.openvino import OpenVinoBackend, create  # noqa: E402
from higen.backends.pool import BackendPool  # noqa: E402
from higen.tensors import load_tensors, save_tensors  # noqa: E402

V = helper.make_tensor_value_info


def save_model(path: Path, nodes, inputs, outputs, opset: int = 17, ir_version: int = 8) -> str:
    """IR 8 by default: onnxruntime 1.31 reads IR <= 13 and onnx 1.23 would write 14."""
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.save(model, path)
    return str(path)


def multi_io_model(path: Path) -> str:
    """Ten nodes, three inputs, three outputs; ``z = Identity(a)`` makes OpenVINO merge names {a, z}."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "bias"], ["a"]),
        helper.make_node("Identity", ["a"], ["z"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Sigmoid", ["r"], ["s"]),
        helper.make_node("Mul", ["s", "x"], ["m"]),
        helper.make_node("Tanh", ["m"], ["t"]),
        helper.make_node("Sub", ["t", "bias"], ["d"]),
        helper.make_node("ReduceMean", ["d"], ["mean"], keepdims=1, axes=[1]),
        helper.make_node("Exp", ["mean"], ["e"]),
    ]
    inputs = [V("x", TensorProto.FLOAT, [3, 4]), V("w", TensorProto.FLOAT, [4, 4]), V("bias", TensorProto.FLOAT, [4])]
    outputs = [V("z", TensorProto.FLOAT, [3, 4]), V("e", TensorProto.FLOAT, [3, 1]), V("s", TensorProto.FLOAT, [3, 4])]
    return save_model(path, nodes, inputs, outputs, opset=17)


def multi_io_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # Deliberately not the graph's order (x, w, bias).
    return {"bias": rng.standard_normal(4).astype(np.float32),
            "w": rng.standard_normal((4, 4)).astype(np.float32),
            "x": rng.standard_normal((3, 4)).astype(np.float32)}


def binary_model(path: Path, op: str, elem_type: int, shape=(3,), **kwargs) -> str:
    return save_model(path, [helper.make_node(op, ["a", "b"], ["c"])],
                      [V("a", elem_type, list(shape)), V("b", elem_type, list(shape))],
                      [V("c", elem_type, list(shape))], **kwargs)


def ort_run(path: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


@pytest.fixture(scope="module")
def cpu() -> OpenVinoBackend:
    return create(Target.parse("ov:CPU"))


def test_describe(cpu):
    info = cpu.describe()
    assert info["runtime"] == "openvino" and info["version"] == ov.__version__
    assert info["device"] == "CPU" and "CPU" in info["devices"]


def test_cpu_matches_onnxruntime_on_multi_io_model(cpu, tmp_path):
    path = multi_io_model(tmp_path / "multi.onnx")
    inputs = multi_io_inputs()
    outputs = cpu.run(cpu.compile(path), inputs)
    expected = ort_run(path, inputs)
    assert list(outputs) == ["z", "e", "s"]  # ONNX names and order, not OpenVINO's merged "a"
    for name, value in expected.items():
        assert outputs[name].dtype == np.float32 and outputs[name].shape == value.shape
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)


def test_outputs_are_copies_not_views_of_the_request(cpu, tmp_path):
    path = binary_model(tmp_path / "add.onnx", "Add", TensorProto.FLOAT)
    compiled = cpu.compile(path)
    one = np.ones(3, np.float32)
    first = cpu.run(compiled, {"a": one, "b": one})["c"]
    cpu.run(compiled, {"a": one * 5, "b": one})
    np.testing.assert_array_equal(first, [2, 2, 2])


def test_float64_keeps_its_dtype_but_is_computed_in_float32(cpu, tmp_path):
    """Documented CPU convention: f64 math runs at f32 inference precision; the port stays f64."""
    path = binary_model(tmp_path / "f64.onnx", "Add", TensorProto.DOUBLE)
    compiled = cpu.compile(path)
    out = cpu.run(compiled, {"a": np.array([0.25, 1.0, 1e300]), "b": np.array([0.5, 2.0**-40, 1e300])})["c"]
    assert out.dtype == np.float64
    assert out[0] == 0.75
    assert out[1] == 1.0  # 1 + 2**-40 in float32
    assert out[2] == np.finfo(np.float32).max  # saturated to FLT_MAX, not inf and not 2e300


def test_int64_keeps_its_dtype_but_is_computed_in_int32(cpu, tmp_path):
    """Documented CPU convention: integer math runs in i32; values past 32 bits are truncated."""
    path = binary_model(tmp_path / "i64.onnx", "Add", TensorProto.INT64)
    compiled = cpu.compile(path)
    out = cpu.run(compiled, {"a": np.array([-7, 2**31 - 2, 2**40], np.int64), "b": np.array([3, 1, 1], np.int64)})["c"]
    assert out.dtype == np.int64
    assert out.tolist() == [-4, 2**31 - 1, 1]


def test_wrong_input_dtype_is_an_error_not_a_silent_conversion(cpu, tmp_path):
    path = binary_model(tmp_path / "f64.onnx", "Add", TensorProto.DOUBLE)
    compiled = cpu.compile(path)
    with pytest.raises(RuntimeError, match="ParameterMismatch") as info:
        cpu.run(compiled, {"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)})
    assert not cpu.is_unsupported(info.value)


UNSUPPORTED_CASES = {
    # op missing from the ONNX frontend: "No conversion rule found for operations: Det-17"
    "op": lambda p: save_model(p, [helper.make_node("Det", ["a"], ["c"])],
                               [V("a", TensorProto.FLOAT, [3, 3])], [V("c", TensorProto.FLOAT, [])]),
    # an op in a domain OpenVINO does not know
    "domain": lambda p: save_custom_domain(p),
    # element type the frontend cannot load: "Loading input model\nUnsupported type"
    "complex64": lambda p: binary_model(p, "Add", TensorProto.COMPLEX64),
    # element type the CPU eltwise kernel lacks, found while compiling: "unsupported src_prc: f8e4m3"
    # (float8 needs IR 9 and opset 19; onnxruntime never reads this model)
    "float8": lambda p: binary_model(p, "Add", TensorProto.FLOAT8E4M3FN, opset=19, ir_version=9),
}


def save_custom_domain(path: Path) -> str:
    graph = helper.make_graph([helper.make_node("Foo", ["a"], ["c"], domain="my.domain")], "g",
                              [V("a", TensorProto.FLOAT, [3])], [V("c", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid("my.domain", 1)])
    onnx.save(model, path)
    return str(path)


UNSUPPORTED_TEXT = {"op": "No conversion rule found for operations: Det-17",
                    "domain": "No conversion rule found for operations: my.domain.Foo",
                    "complex64": "Unsupported type", "float8": "unsupported src_prc: f8e4m3"}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED_CASES))
def test_unsupported_models_are_classified_unsupported(cpu, tmp_path, case):
    path = UNSUPPORTED_CASES[case](tmp_path / f"{case}.onnx")
    with pytest.raises(RuntimeError) as info:
        cpu.compile(path)
    assert UNSUPPORTED_TEXT[case] in str(info.value)
    assert cpu.is_unsupported(info.value), str(info.value)


@pytest.mark.parametrize("elem_type, kind", [(TensorProto.BFLOAT16, "bf16"), (TensorProto.FLOAT8E4M3FN, "f8e4m3")])
def test_types_numpy_cannot_hold_are_unsupported(cpu, tmp_path, elem_type, kind):
    """OpenVINO compiles these, but bf16 reads back as float16 *bits* and f8 as uint8: refuse them."""
    path = save_model(tmp_path / "m.onnx", [helper.make_node("Identity", ["a"], ["c"])],
                      [V("a", elem_type, [3])], [V("c", elem_type, [3])], opset=19, ir_version=9)
    with pytest.raises(Unsupported, match=kind) as info:
        cpu.compile(path)
    assert cpu.is_unsupported(info.value)


def test_frontend_conversion_failure_stays_an_error(cpu, tmp_path):
    """Celu on float64 fails inside OpenVINO's converter (it builds an f32 constant): a bug, not a gap."""
    path = save_model(tmp_path / "celu.onnx", [helper.make_node("Celu", ["a"], ["c"])],
                      [V("a", TensorProto.DOUBLE, [3])], [V("c", TensorProto.DOUBLE, [3])])
    with pytest.raises(RuntimeError, match="Conversion is failed for: Celu") as info:
        cpu.compile(path)
    assert not cpu.is_unsupported(info.value)


def test_gpu_without_a_gpu_is_unavailable_not_cpu():
    if any(device.startswith("GPU") for device in ov.Core().available_devices):
        pytest.skip("this machine has an OpenVINO GPU")
    with pytest.raises(DeviceUnavailable, match="no GPU device"):
        create(Target.parse("ov:GPU"))


@pytest.mark.parametrize("text", ["ov:NPU", "ov:cpu", "ov:CPU:O3"])
def test_bad_targets_are_refused(text):
    with pytest.raises(ValueError):
        create(Target.parse(text))


def test_through_the_worker_pool(tmp_path):
    model = multi_io_model(tmp_path / "multi.onnx")
    unsupported = UNSUPPORTED_CASES["op"](tmp_path / "det.onnx")
    inputs = multi_io_inputs()
    inputs_path = tmp_path / "inputs.npz"
    save_tensors(inputs_path, inputs)
    save_tensors(tmp_path / "det_inputs.npz", {"a": np.eye(3, dtype=np.float32)})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with BackendPool([Target.parse("ov:CPU")], tmp_path / "logs", timeout_s=120) as pool:
        assert pool.describe()["ov:CPU"]["runtime"] == "openvino"
        outcome = pool.run(Path(model), inputs_path, out_dir)["ov:CPU"]
        assert outcome.status == "ok", (outcome.message, outcome.log_tail)
        outputs = load_tensors(outcome.outputs_path)
        for name, value in ort_run(model, inputs).items():
            np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)
        outcome = pool.run(Path(unsupported), tmp_path / "det_inputs.npz", out_dir)["ov:CPU"]
        assert (outcome.status, outcome.stage) == ("unsupported", "compile"), outcome.message
        assert "No conversion rule found for operations: Det" in outcome.message
