"""Versioned targets (``ort@1.20.1:cpu:O3``) and the runtime cache (``higen runtimes``).

A real old ONNX Runtime is installed from PyPI into a temporary cache (``$HIGEN_CACHE_DIR``) and run
through the real backend worker next to the environment's own release: each reports its version, a
version-differential campaign and a saved case keep the pinned target names, and a release that is
not installed (or a cache folder holding another release) is refused in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from conftest import float_input, make_model
from higen import runtimes
from higen.backends.base import BackendMissing, Target
from higen.backends.pool import BackendPool
from higen.main import main
from higen.modes import diff_plan, exec_plan, normal_plan
from higen.tensors import load_tensors, save_tensors
from higen.workers import WorkerStartError
from test_bugs_common import relu_clip_chain, save_case

OLD = "1.20.1"  # the oldest ONNX Runtime whose wheel imports against NumPy 2 here (~13 MB)
OLD_TARGET = f"ort@{OLD}:cpu:O3"
MISSING = "1.27.0"  # never the environment's release (pyproject asks for >= 1.31)


def pypi_reachable() -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request("https://pypi.org/simple/onnxruntime/", method="HEAD"),
                               timeout=10)
        return True
    except urllib.error.HTTPError:  # an answer, even a refusal, means the network is there
        return True
    except OSError:
        return False


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HIGEN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def old_ort(tmp_path_factory):
    """onnxruntime==OLD installed with ``higen runtimes add`` into this module's own cache, which is
    ``$HIGEN_CACHE_DIR`` (op support probes included) while the module runs."""
    if not pypi_reachable():
        pytest.skip("PyPI cannot be reached: the runtime-cache tests install an old onnxruntime from it")
    cache = tmp_path_factory.mktemp("runtime-cache")
    saved = os.environ["HIGEN_CACHE_DIR"]
    os.environ["HIGEN_CACHE_DIR"] = str(cache)
    try:
        assert main(["runtimes", "add", f"onnxruntime=={OLD}"]) == 0
        yield cache
    finally:
        os.environ["HIGEN_CACHE_DIR"] = saved


def small_model(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """MatMul, Add, Relu on float32, saved with seeded inputs; returns the NumPy result too."""
    rng = np.random.default_rng(7)
    weight, bias = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["y"])],
        [float_input("x", [2, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor(n, TensorProto.FLOAT, v.shape, v.flatten()) for n, v in (("w", weight), ("b", bias))])
    x = rng.standard_normal((2, 4)).astype(np.float32)
    model_path, inputs_path = tmp_path / "model.onnx", tmp_path / "inputs.npz"
    model_path.write_bytes(model.SerializeToString())
    save_tensors(inputs_path, {"x": x})
    return model_path, inputs_path, np.maximum(x @ weight + bias, 0)


# -- without a network -------------------------------------------------------------------------
def test_target_grammar_keeps_the_release_in_the_name():
    target = Target.parse("ort@1.20.1:cpu:O3")
    assert (target.runtime, target.version, target.device, target.opt) == ("ort", "1.20.1", "cpu", "O3")
    assert target.name == "ort@1.20.1:cpu:O3" and target.pinned == "ort@1.20.1"
    assert Target.parse("ov@2025.1.0:CPU").name == "ov@2025.1.0:CPU" and Target.parse("ort:cpu:O0").version == ""
    for bad in ("ort@:cpu:O3", "ort@abc:cpu", "ort@1.20.1", "@1.2:cpu"):
        with pytest.raises(ValueError, match=r"RUNTIME\[@VERSION\]|bad version"):
            Target.parse(bad)


def test_plans_pin_every_target_of_a_pinned_backend():
    installed = runtimes.main_version(runtimes.runtime_for("ort"))  # the environment's own release, no cache
    normal = normal_plan(f"ort@{installed}", with_gpu=False)
    assert [t.name for t in normal.targets] == [f"ort@{installed}:cpu:O0", f"ort@{installed}:cpu:O3"]
    assert normal.pairs[0] == (f"ort@{installed}:cpu:O0", f"ort@{installed}:cpu:O3")
    diff = diff_plan([f"ort@{installed}", "ort"], "cpu")
    assert (f"ort@{installed}:cpu:O3", "ort:cpu:O3") in diff.pairs
    with pytest.raises(ValueError, match="RUNTIME"):
        normal_plan("ort@1.20.1:cpu:O3")


def test_a_release_not_installed_is_one_line_naming_the_install_command(empty_cache, tmp_path, capsys):
    command = f"higen runtimes add onnxruntime=={MISSING}"
    for make in (lambda: normal_plan(f"ort@{MISSING}"), lambda: diff_plan([f"ort@{MISSING}", "ort"], "cpu"),
                 lambda: exec_plan([f"ort@{MISSING}:cpu:O0"], False),
                 lambda: BackendPool([Target.parse(f"ort@{MISSING}:cpu:O3")], tmp_path)):
        with pytest.raises(BackendMissing, match=command.replace(".", r"\.")):
            make()
    model, _, _ = small_model(tmp_path)
    for argv in (["--diff-backends", f"ort@{MISSING},ort", "--run-root", str(tmp_path / "runs")],
                 ["--compiler", f"ort@{MISSING}", "--run-root", str(tmp_path / "runs")],
                 ["exec", str(model), "--backends", f"ort@{MISSING}"]):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and command in error, error
    assert not (tmp_path / "runs").exists()


def test_the_cache_lists_release_folders_only(empty_cache):
    for name in ("onnxruntime-1.20.1", "openvino-2025.2.0", "apache-tvm-0.26.0", "apache-tvm-ffi-0.1.0",
                 ".tmp-onnxruntime-1.21.0-99", "notes"):
        (empty_cache / "runtimes" / name).mkdir(parents=True)
    assert [r.pinned for r in runtimes.installed()] == ["ort@1.20.1", "ov@2025.2.0", "tvm@0.26.0"]
    assert runtimes.path_for("openvino", "2025.2") == empty_cache / "runtimes" / "openvino-2025.2.0"
    assert runtimes.path_for("ort", "1.21.0") is None


def test_runtime_specs_are_checked():
    assert runtimes.parse_spec("onnxruntime==1.20.1")[1] == "1.20.1"
    assert runtimes.parse_spec("ort@1.20.1")[0].distribution == "onnxruntime"
    assert runtimes.parse_spec("apache_tvm==0.26.0")[0].key == "tvm"
    with pytest.raises(ValueError, match="name one release"):
        runtimes.parse_spec("onnxruntime")
    with pytest.raises(ValueError, match="unknown runtime"):
        runtimes.parse_spec("onnxruntime-gpu==1.20.1")


# -- with an old ONNX Runtime installed from PyPI -----------------------------------------------
def test_add_installs_into_the_cache_layout_and_lists_it(old_ort, capsys):
    folder = old_ort / "runtimes" / f"onnxruntime-{OLD}"
    assert runtimes.path_for("onnxruntime", OLD) == folder and (folder / "onnxruntime" / "__init__.py").is_file()
    assert [r.pinned for r in runtimes.installed()] == [f"ort@{OLD}"]
    assert not (folder / "numpy").exists()  # --no-deps: numpy and the rest come from the environment
    assert main(["runtimes", "add", f"onnxruntime=={OLD}"]) == 0  # already there: nothing to do
    capsys.readouterr()
    assert main(["runtimes", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["target"] == f"ort@{OLD}" and row["imports"] and row["path"] == str(folder) and row["size_mb"] > 5


def test_each_worker_imports_its_own_release(old_ort, tmp_path):
    model, inputs, expected = small_model(tmp_path)
    installed = runtimes.main_version(runtimes.runtime_for("ort"))
    with BackendPool([Target.parse(OLD_TARGET), Target.parse("ort:cpu:O3")], tmp_path / "logs") as pool:
        described = pool.describe()
        outcomes = pool.run(model, inputs, tmp_path)
    assert described[OLD_TARGET]["version"] == OLD and described[OLD_TARGET]["pinned_version"] == OLD
    assert described[OLD_TARGET]["runtime_path"] == str(old_ort / "runtimes" / f"onnxruntime-{OLD}")
    assert described["ort:cpu:O3"]["version"] == installed != OLD
    for outcome in outcomes.values():
        assert outcome.ok, outcome
        np.testing.assert_allclose(load_tensors(outcome.outputs_path)["y"], expected, rtol=1e-5, atol=1e-6)


def test_a_cache_folder_holding_another_release_is_refused(old_ort, tmp_path):
    fake = old_ort / "runtimes" / "onnxruntime-1.99.0"
    fake.symlink_to(old_ort / "runtimes" / f"onnxruntime-{OLD}")
    try:
        with pytest.raises(WorkerStartError, match=f"imported onnxruntime {OLD}.*not 1.99.0"):
            BackendPool([Target.parse("ort@1.99.0:cpu:O3")], tmp_path / "logs").start()
    finally:
        fake.unlink()


def test_version_diff_campaign_records_pinned_targets(old_ort, tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "higen.main", "--strategy", "random", "--diff-backends",
                           f"ort@{OLD},ort", "--max-tests", "5", "--seed", "3", "--run-root", str(run),
                           "--no-session-subdir", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in (run / "training.log").read_text().splitlines()]
    start = events[0]
    assert start["plan"] == [OLD_TARGET, "ort:cpu:O3"]
    assert start["versions"]["targets"][OLD_TARGET]["version"] == OLD
    tests = [e for e in events if e["event"] == "test"]
    assert len(tests) == 5 and any(set(e.get("outcomes", {})) == {OLD_TARGET, "ort:cpu:O3"} for e in tests)
    # op support is cached per release really imported, not per target name alone
    support = sorted(p.name for p in (old_ort / "support").glob("*.json"))
    assert any(name.startswith(f"ort@{OLD}_cpu_O3-onnxruntime{OLD}-") for name in support), support


def test_a_case_of_a_pinned_target_replays_on_that_release(old_ort, tmp_path, monkeypatch, capsys):
    # ORT's FuseReluClip fails on this chain (docs/bug-cases.md), in the old release as in the new
    model, inputs = relu_clip_chain()
    case = save_case(tmp_path, model, inputs, [OLD_TARGET], pairs=[])
    meta = json.loads((case / "meta.json").read_text())
    assert meta["targets"] == [OLD_TARGET] and OLD_TARGET in meta["signature"]
    assert meta["versions"]["targets"][OLD_TARGET]["version"] == OLD
    assert main(["repro", str(case), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["recorded_versions"] == {OLD_TARGET: OLD}
    monkeypatch.setenv("HIGEN_CACHE_DIR", str(tmp_path / "elsewhere"))
    capsys.readouterr()
    assert main(["repro", str(case)]) == 2
    assert f"higen runtimes add onnxruntime=={OLD}" in capsys.readouterr().err


@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2, reason="needs NumPy 2 to meet a NumPy 1 wheel")
def test_a_release_built_for_another_numpy_is_refused_and_leaves_nothing(old_ort):
    with pytest.raises(runtimes.RuntimeInstallError, match="NumPy 1.x"):
        runtimes.install("onnxruntime==1.15.1")
    assert sorted(p.name for p in (old_ort / "runtimes").iterdir()) == [f"onnxruntime-{OLD}"]


def test_remove_deletes_the_release(old_ort, capsys):
    extra = old_ort / "runtimes" / "onnxruntime-1.98.0"
    extra.mkdir()
    assert main(["runtimes", "remove", "ort@1.98.0"]) == 0 and not extra.exists()
    assert main(["runtimes", "remove", "ort@1.98.0"]) == 2
    assert "is not in" in capsys.readouterr().err
