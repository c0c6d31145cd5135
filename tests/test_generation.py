"""Generation with the real NNSmith in the real generator worker."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import onnx
import pytest

from higen.backends.base import Target
from higen.backends.pool import BackendPool
from higen.generation.config import METHODS, ConfigError, GenConfig
from higen.support import cache_dir, learn_support
from higen.tensors import load_tensors


@pytest.mark.parametrize("method", METHODS)
def test_each_method_generates_valid_models(generator, tmp_path, method):
    for seed in range(3):
        result = generator.generate(GenConfig(method=method, seed=seed, max_nodes=8), tmp_path / str(seed))
        assert result.valid, result.reason
        test = result.test
        model = onnx.load(test.model_path)
        onnx.checker.check_model(model, full_check=True)
        inputs, reference = load_tensors(test.inputs_path), load_tensors(test.reference_path)
        assert [i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}] \
            == list(inputs)
        for output in model.graph.output:  # exported dtypes equal PyTorch's (else the test is rejected)
            declared = onnx.helper.tensor_dtype_to_np_dtype(output.type.tensor_type.elem_type)
            assert reference[output.name].dtype == declared
        assert test.n_nodes >= 1 and any(t.startswith("op:") for t in test.tokens)
        if method == "single-io":
            assert len(inputs) == 1 and len(reference) == 1


def test_same_seed_same_test(generator, tmp_path):
    config = GenConfig(seed=1234, max_nodes=12)
    first, second = (generator.generate(config, tmp_path / name).test for name in ("a", "b"))
    assert first.model_path.read_bytes() == second.model_path.read_bytes()
    a, b = load_tensors(first.inputs_path), load_tensors(second.inputs_path)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    third = generator.generate(config.with_seed(1235), tmp_path / "c").test
    assert third.model_path.read_bytes() != first.model_path.read_bytes()


def test_operator_and_dtype_sets_are_respected(generator, tmp_path):
    config = GenConfig(ops=("core.ReLU", "core.Add", "core.Sigmoid"), dtypes=("float32",), seed=5)
    test = generator.generate(config, tmp_path).test
    assert set(test.nnsmith_ops) <= set(config.ops)
    assert all(v.dtype == np.float32 for v in load_tensors(test.inputs_path).values())


def test_impossible_config_is_invalid_not_an_exception(generator, tmp_path):
    result = generator.generate(GenConfig(ops=("core.NCHWConv2d",), dtypes=("bool",), seed=1), tmp_path)
    assert not result.valid and "bool" in result.reason
    assert generator.generate(GenConfig(seed=2), tmp_path / "next").valid  # the worker carries on


def test_bad_config_values_are_refused_with_the_field_named():
    with pytest.raises(ConfigError, match="method"):
        GenConfig(method="magic")
    with pytest.raises(ConfigError, match="dtypes"):
        GenConfig(dtypes=("float8",))
    with pytest.raises(ConfigError, match="max_nodes"):
        GenConfig(max_nodes=0)
    assert GenConfig.from_json(GenConfig(seed=3).to_json()) == GenConfig(seed=3)


def test_generator_restarts_after_it_dies(generator, tmp_path):
    restarts = generator.worker.restarts
    generator.worker.proc.send_signal(signal.SIGSEGV)  # dies between two tests
    generator.worker.proc.wait()
    assert generator.generate(GenConfig(seed=7), tmp_path / "a").valid
    generator.submit(GenConfig(seed=8), tmp_path / "b")  # dies during a test: that test is invalid
    os.kill(generator.worker.proc.pid, signal.SIGSEGV)
    result = generator.collect()
    assert not result.valid and "SIGSEGV" in result.reason
    assert generator.generate(GenConfig(seed=9), tmp_path / "c").valid
    assert generator.worker.restarts == restarts + 2


def test_support_is_learned_once_and_steers_generation(generator, tmp_path):
    with BackendPool([Target.parse("ort:cpu:O0")], tmp_path / "logs") as pool:
        allowed_path = learn_support(generator, pool, tmp_path)
        allowed = json.loads(allowed_path.read_text())
        assert "float32" in allowed["core.ReLU"]
        assert "float32" in allowed["core.Tan"] and "float64" not in allowed["core.Tan"]  # ORT lacks Tan(double)
        cached = list(cache_dir().glob("ort_cpu_O0-*.json"))
        assert len(cached) == 1
        support = json.loads((tmp_path / "support.json").read_text())
        assert support["targets"]["ort:cpu:O0"]["core.Tan"]["float64"] == "unsupported"
        cached[0].write_text(json.dumps({"core.ReLU": {"float32": "ok"}}))  # the cache is what is used next
        assert json.loads(learn_support(generator, pool, tmp_path).read_text()) == {"core.ReLU": ["float32"]}
        test = generator.generate(GenConfig(dtypes=("float32", "float64"), seed=3), tmp_path / "t").test
        assert set(test.nnsmith_ops) == {"core.ReLU"}
    generator.allowed_path = None
