"""Every CPU target compiles and runs real NNSmith float32 models and agrees with PyTorch."""

from __future__ import annotations

import pytest

from higen.backends.base import REFERENCE, Target
from higen.backends.pool import BackendPool
from higen.generation.client import Generator
from higen.generation.config import GenConfig
from higen.oracle import Verdict, judge
from higen.tensors import load_tensors

TARGETS = ["ort:cpu:O0", "ort:cpu:O3", "tvm:llvm:O0", "tvm:llvm:O3", "ov:CPU"]
#: Common, numerically tame operators: a disagreement here would be a real bug, not noise.
OPS = ("core.Add", "core.Sub", "core.Mul", "core.ReLU", "core.Sigmoid", "core.NCHWConv2d", "core.MaxPool2d",
       "core.AvgPool2d", "core.Softmax", "core.Concat2", "core.Reshape", "core.Transpose", "torch.PTMatMul",
       "core.ReduceMean", "core.Clip", "core.Slice", "core.Max", "core.Abs")


@pytest.fixture(scope="module")
def engine_parts(tmp_path_factory):
    logs = tmp_path_factory.mktemp("agree")
    generator = Generator(logs)
    pool = BackendPool([Target.parse(t) for t in TARGETS], logs, timeout_s=120)
    generator.launch()
    pool.start()
    generator.wait_ready()
    yield generator, pool
    generator.close()
    pool.close()


def test_float32_models_agree_with_reference_on_every_target(engine_parts, tmp_path):
    generator, pool = engine_parts
    agreed = 0
    for seed in range(6):
        result = generator.generate(GenConfig(ops=OPS, dtypes=("float32",), max_nodes=8, seed=seed),
                                    tmp_path / str(seed))
        assert result.valid, result.reason
        test = result.test
        outcomes = pool.run(test.model_path, test.inputs_path, test.directory)
        for name, outcome in outcomes.items():
            assert outcome.status == "ok", f"{name} on seed {seed}: {outcome.status} {outcome.message[:300]}"
        outputs = {REFERENCE: load_tensors(test.reference_path)}
        outputs.update({name: load_tensors(o.outputs_path) for name, o in outcomes.items()})
        judgement = judge(outcomes, outputs, [(REFERENCE, t) for t in TARGETS], test.producers)
        assert judgement.verdict is Verdict.OK, [f.detail for f in judgement.findings]
        agreed += 1
    assert agreed == 6
