"""``higen maximize`` with real ONNX Runtime: the error measure, the search against random search,
the report and case folder a run writes (``higen repro`` replays it), and a ranked folder."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from higen.errors import UserError
from higen.main import main
from higen.numerics.maximize import model_space, parse_ranges
from higen.numerics.maxpair import PairEvaluator, PairPool, sides_for
from higen.numerics.maxsearch import make_search, outputs_error, run_search, tensor_error
from higen.tensors import load_tensors

REPO = Path(__file__).resolve().parent.parent


def bench_models():
    """The crafted models of experiments/bench_maximize.py (one definition for both)."""
    spec = importlib.util.spec_from_file_location("bench_maximize", REPO / "experiments" / "bench_maximize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MODELS


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    built = bench_models()
    paths = {}
    for name in ("layernorm", "div_mul", "softmax_log"):
        paths[name] = folder / f"{name}.onnx"
        onnx.save(built[name](), paths[name])
    return paths


def test_error_is_in_eps_units_and_one_sided_nan_is_largest():
    one = np.float32(1)
    assert tensor_error(np.array([one]), np.array([np.nextafter(one, np.float32(2))])) == pytest.approx(1.0)
    assert tensor_error(np.array([0.0], np.float32), np.array([2 ** -23], np.float32)) == pytest.approx(1.0)
    assert tensor_error(np.array([np.nan, 1.0]), np.array([np.nan, 1.0])) == 0.0
    assert tensor_error(np.array([np.inf]), np.array([np.inf])) == 0.0
    assert math.isinf(tensor_error(np.array([1.0], np.float32), np.array([np.nan], np.float32)))
    assert math.isinf(tensor_error(np.array([np.inf]), np.array([-np.inf])))
    assert tensor_error(np.array([5], np.int32), np.array([3], np.int32)) == pytest.approx(2 / 5)
    error, where = outputs_error({"a": np.zeros(2, np.float32), "b": np.ones(2, np.float32)},
                                 {"a": np.zeros(2, np.float32), "b": np.ones(2, np.float32) * 2})
    assert where == "b" and error == pytest.approx(1 / np.finfo(np.float32).eps)


def test_ranges_are_parsed_and_checked(models):
    assert parse_ranges("x=-1:2.5, y=0:1") == {"x": (-1.0, 2.5), "y": (0.0, 1.0)}
    with pytest.raises(UserError, match="NAME=LOW:HIGH"):
        parse_ranges("x=1")
    space = model_space(onnx.load(str(models["div_mul"])), 0.0, 1.0, {"y": (-4.0, -2.0)})
    decoded = space.decode(np.random.default_rng(0).random(space.dim))
    assert decoded["x"].min() >= 0 and decoded["x"].max() <= 1
    assert decoded["y"].min() >= -4 and decoded["y"].max() <= -2 and decoded["y"].dtype == np.float32


def test_differential_evolution_beats_random_search_on_layernorm(models, tmp_path):
    """ORT's fused LayerNormalization computes the variance in one pass: rows that are nearly
    constant cancel badly, and random inputs in [0, 1] never come near them."""
    model = onnx.load(str(models["layernorm"]))
    space = model_space(model, 0.0, 1.0, {})
    best = {}
    with PairPool(sides_for("ort"), tmp_path / "logs") as pool:
        for method in ("de", "random"):
            evaluator = PairEvaluator(pool, space, models["layernorm"], tmp_path)
            result = run_search(make_search(method, space, 0, 8, 48), evaluator, 48)
            assert result.evaluations == 48
            assert [row["best"] for row in result.curve] == sorted(row["best"] for row in result.curve)
            best[method] = result.best_error
    assert best["random"] > 0  # the builds differ somewhat everywhere ...
    assert best["de"] > 10 * best["random"]  # ... and far more where the search goes


def test_cli_writes_report_and_a_case_that_repro_replays(models, tmp_path):
    out = tmp_path / "out"
    assert main(["maximize", str(models["layernorm"]), "--targets", "ort", "--evals", "40", "--budget", "60",
                 "--out", str(out), "--localize-budget", "20"]) == 0
    folder = out / "layernorm"
    report = (folder / "report.md").read_text()
    assert "worst error" in report and "Error propagation" in report and "higen localize" in report
    for name in ("curve.csv", "curve.png", "graph.png", "trace.csv"):
        assert (folder / name).stat().st_size > 0
    worst = load_tensors(folder / "worst_inputs.npz")
    assert worst["x"].shape == (4, 64) and 0 <= worst["x"].min() and worst["x"].max() <= 1
    cases = [p for p in (folder / "bug_cases").iterdir() if p.is_dir()]
    assert len(cases) == 1
    meta = json.loads((cases[0] / "meta.json").read_text())
    assert meta["oracle"]["pairs"] == [["ort:cpu:O0", "ort:cpu:O3"]]
    localization = json.loads((cases[0] / "localization.json").read_text())
    assert localization["reproduced"] and localization["compared"] == ["ort:cpu:O0", "ort:cpu:O3"]
    assert any("LayerNormFusion" in switch for switch in localization["pass_search"]["ort:cpu:O3"]["smallest"])
    assert main(["repro", str(cases[0])]) == 0


def test_batch_ranks_models_by_worst_error(models, tmp_path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    for name, path in models.items():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.onnx").write_bytes(b"not a model")
    out = tmp_path / "out"
    assert main(["maximize", str(folder), "--targets", "ort", "--evals", "24", "--budget", "60", "--out", str(out),
                 "--localize-top", "0"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    order = [row["model"] for row in rows]
    assert order[0] == "layernorm" and order.index("div_mul") < order.index("softmax_log")
    assert rows[-1]["model"] == "broken" and rows[-1]["status"] == "skipped" and "valid ONNX" in rows[-1]["reason"]
    assert "| rank |" in (out / "summary.md").read_text()


def test_inputs_maximize_searches_every_valid_test_of_a_campaign(tmp_path):
    from higen.engine import Engine, EngineSettings
    from higen.generation.config import GenConfig
    from higen.modes import normal_plan
    from higen.numerics.maxfuzz import EVALS
    from higen.run_dir import create_run_dir

    settings = EngineSettings(plan=normal_plan("ort", with_gpu=False), timeout_s=30, learn_support=False)
    with Engine(settings, create_run_dir(tmp_path / "runs")) as engine:
        engine.start()
        results = [engine.run_one(GenConfig(seed=seed, inputs="maximize", dtypes=("float32",), max_nodes=4))
                   for seed in range(3)]
    searched = [r.config.extra.get("maximized") for r in results if r.valid and all(o.ok for o in r.outcomes.values())]
    assert searched and None not in searched, [r.reason for r in results]
    for record in searched:
        assert record["evaluations"] == EVALS + 1 and record["pair"] == ["ort:cpu:O0", "ort:cpu:O3"]
        assert record["best_error"] >= record["initial_error"] or not record.get("inputs_replaced")
