"""A short real campaign (NNSmith models on ONNX Runtime) with coverage on: the CSV, the numbers on
each TestResult, and ``higen plot`` over two runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from higen.cli.coverage import add_coverage_flags, coverage_settings_from_args
from higen.cli.parsing import OneLineParser
from higen.cli.plot import command_plot
from higen.coverage.manager import CoverageSettings
from higen.engine import Engine, EngineSettings
from higen.errors import UserError
from higen.generation.config import GenConfig
from higen.modes import normal_plan
from higen.run_dir import RunLog

TESTS = 10


def campaign(run_dir: Path, seed: int) -> list:
    settings = EngineSettings(plan=normal_plan("ort", with_gpu=False), learn_support=False,
                              coverage=CoverageSettings(families=("ort",)))
    log = RunLog(run_dir / "training.log")
    results = []
    with Engine(settings, run_dir) as engine:
        engine.start()
        log.write("start", seed=seed)
        engine.submit(GenConfig(max_nodes=6, seed=seed))
        for index in range(1, TESTS + 1):
            following = GenConfig(max_nodes=6, seed=seed + index) if index < TESTS else None
            result = engine.finish(prefetch=following)
            log.write("test", **result.to_json())
            results.append(result)
        growth = engine.coverage.epoch_growth()
    log.write("end", tests=TESTS)
    log.close()
    return results, growth


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    dirs = [tmp_path_factory.mktemp("run_a"), tmp_path_factory.mktemp("run_b")]
    return [(d, *campaign(d, seed)) for d, seed in zip(dirs, (0, 100))]


def test_csv_rows_and_reward_numbers(runs):
    run_dir, results, growth = runs[0]
    rows = list(csv.DictReader(open(run_dir / "coverage_by_steps.csv")))
    assert list(rows[0]) == ["step", "time", "structure_covered", "ort_transformers_covered"]
    assert [int(r["step"]) for r in rows] == list(range(1, TESTS + 1))
    structure = [int(r["structure_covered"]) for r in rows]
    assert structure == sorted(structure) and structure[-1] == sum(r.coverage_new["structure"] for r in results)
    for row, result in zip(rows, results):
        ran = any(o.status in ("ok", "error", "unsupported") for o in result.outcomes.values())
        # measured -> a number; not measured (invalid test, crashed worker) -> empty, never 0
        assert (row["ort_transformers_covered"] != "") == ("ort_transformers" in result.coverage_new) == ran
    assert any(r.coverage_new.get("ort_transformers", 0) > 0 for r in results)
    assert growth["structure"] == structure[-1] and growth["ort_transformers"] >= 1
    logged = [json.loads(line) for line in open(run_dir / "training.log")]
    assert logged[1]["coverage_new"] == results[0].coverage_new


def test_plot_two_runs(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert command_plot([str(runs[0][0]), str(runs[1][0]), "--out", str(out), "--labels", "seed 0,seed 100",
                         "--title", "ORT, 10 tests"]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
    with pytest.raises(UserError, match="labels"):
        command_plot([str(runs[0][0]), "--out", str(out), "--labels", "a,b"])
    with pytest.raises(UserError, match="neither"):
        command_plot([str(tmp_path), "--out", str(out)])


def test_flags(tmp_path):
    parser = OneLineParser(prog="higen")
    add_coverage_flags(parser)
    settings = coverage_settings_from_args(parser.parse_args(["--coverage", "none"]))
    assert settings.families == () and settings.gcov == {}
    settings = coverage_settings_from_args(parser.parse_args(["--cov-every", "5", "--cov-reset"]))  # auto by default
    assert "tvm-py" in settings.families and settings.every == 5 and settings.reset and settings.final_sample
    assert not coverage_settings_from_args(parser.parse_args(["--no-final-gcovr"])).final_sample
    with pytest.raises(UserError, match="unknown collector"):
        coverage_settings_from_args(parser.parse_args(["--coverage", "ort,llvm"]))
    with pytest.raises(UserError, match="go together"):
        coverage_settings_from_args(parser.parse_args(["--tvm-cov-build", str(tmp_path)]))
    with pytest.raises(UserError, match="no .gcno"):
        coverage_settings_from_args(parser.parse_args(["--tvm-cov-build", str(tmp_path), "--tvm-cov-src", str(tmp_path)]))
