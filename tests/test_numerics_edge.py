"""Edge-value inputs: every promised class per float dtype, seeded, in a real NNSmith test and in exec."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from higen.errors import UserError
from higen.generation.config import ConfigError, GenConfig
from higen.numerics.edge import FLOAT_CLASSES, INT_CLASSES, classes_present, edge_inputs, edge_tensor, edge_values
from higen.numerics.inputs import edge_inputs_for_model, exec_inputs, with_inputs
from higen.tensors import load_tensors

from conftest import make_model


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_every_float_class_is_present_and_means_what_it_says(dtype):
    values = edge_values(dtype)
    info = np.finfo(dtype)
    tensor = edge_tensor((3, 20), dtype, np.random.default_rng(7))
    assert tensor.dtype == np.dtype(dtype) and tensor.shape == (3, 20)
    assert classes_present(tensor) == set(FLOAT_CLASSES)
    flat = tensor.ravel()
    assert ((flat == 0) & np.signbit(flat)).any() and ((flat == 0) & ~np.signbit(flat)).any()  # -0 and +0
    assert np.isnan(flat).any() and np.isposinf(flat).any() and np.isneginf(flat).any()
    assert ((np.abs(flat) > 0) & (np.abs(flat) < info.tiny)).any()  # a denormal survived the dtype
    assert (np.abs(flat) == info.max).any() and (np.abs(flat) == info.tiny).any()
    assert {1.0, -1.0} <= set(values["unit_edge"].tolist())
    with np.errstate(over="ignore", under="ignore"):
        below, above = values["exp_edge"][:2]
        assert np.isfinite(np.exp(below)) and np.isinf(np.exp(above))  # Exp overflow threshold, in the dtype
        below, above = values["pow_edge"][:2]
        assert np.isfinite(below * below) and np.isinf(above * above)  # Pow(x, 2) overflow threshold
        still, gone = values["pow_edge"][-2:]
        assert still * still != 0 and gone * gone == 0  # ... and its underflow threshold


def test_integer_and_bool_classes_and_small_tensors():
    tensor = edge_tensor((16,), "int8", np.random.default_rng(0))
    assert classes_present(tensor) == set(INT_CLASSES)
    assert {-128, 127} <= set(tensor.tolist())
    assert classes_present(edge_tensor((8,), "bool", np.random.default_rng(0))) == {"true", "false"}
    scalar = edge_tensor((), "float32", np.random.default_rng(0))
    assert scalar.shape == () and len(classes_present(scalar)) == 1  # too small for all: one class, at random


def test_edge_inputs_are_reproducible_from_the_seed():
    specs = [("a", (4, 5), np.float32), ("b", (3,), np.int64)]
    first, again, other = edge_inputs(specs, 3), edge_inputs(specs, 3), edge_inputs(specs, 4)
    assert all(np.array_equal(first[k], again[k], equal_nan=k == "a") for k in first)
    assert not np.array_equal(first["a"], other["a"], equal_nan=True)


def test_gen_config_inputs_field():
    assert GenConfig().inputs == "gradient" and GenConfig().input_strategy == "gradient"
    assert GenConfig(input_search=False).input_strategy == "random"
    assert GenConfig(inputs="edge", input_search=False).input_strategy == "edge"
    assert with_inputs(GenConfig(max_nodes=7), "edge") == GenConfig(max_nodes=7, inputs="edge")
    assert GenConfig.from_json(GenConfig(inputs="edge").to_json()).inputs == "edge"
    with pytest.raises(ConfigError, match="inputs 'fancy' unknown"):
        GenConfig(inputs="fancy")


def test_exec_inputs_for_an_onnx_model(tmp_path):
    model = make_model([helper.make_node("Log", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 8])])
    edge = exec_inputs(model, "edge", seed=1)
    assert edge["x"].dtype == np.float16 and classes_present(edge["x"]) == set(FLOAT_CLASSES)
    assert np.array_equal(edge["x"], edge_inputs_for_model(model, 1)["x"], equal_nan=True)
    assert np.isfinite(exec_inputs(model, "random", seed=1)["x"]).all()
    with pytest.raises(UserError, match="gradient needs NNSmith"):
        exec_inputs(model, "gradient", seed=1)
    with pytest.raises(UserError, match="no such file"):
        exec_inputs(model, tmp_path / "missing.npz", seed=1)


def test_campaign_generator_feeds_edge_values_and_recomputes_the_reference(generator, tmp_path):
    """The worker's reference is PyTorch on the edge inputs: ONNX Runtime on the exported model agrees
    wherever the reference is finite (NaN/Inf positions too)."""
    config = GenConfig(ops=("core.Add", "core.Mul", "core.Sub", "core.Abs", "core.Neg"), dtypes=("float32",),
                       max_nodes=5, inputs="edge", seed=11)
    result = generator.generate(config, tmp_path / "a")
    assert result.valid, result.reason
    inputs, reference = load_tensors(result.test.inputs_path), load_tensors(result.test.reference_path)
    assert any(len(classes_present(x)) == len(FLOAT_CLASSES) for x in inputs.values())
    assert result.test.reference_nonfinite  # NaN and Inf inputs reach the outputs
    session = ort.InferenceSession(str(result.test.model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for name, value in zip(names, session.run(names, inputs)):
        np.testing.assert_allclose(value, reference[name], rtol=1e-5, atol=0, equal_nan=True)
    again = generator.generate(config, tmp_path / "b")  # same seed, same edge inputs
    assert all(np.array_equal(inputs[k], v, equal_nan=True) for k, v in load_tensors(again.test.inputs_path).items())
    assert onnx.load(result.test.model_path) == onnx.load(again.test.model_path)
