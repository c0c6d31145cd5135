"""The instrumented TVM that ``experiments/build_instrumented_tvm.sh`` builds, and the script itself.

The build takes hours, so the test on it is skipped (with the command to make it) where it is absent;
it runs in the build's own virtualenv, in a subprocess. The script's refusals (clear one-line
errors before anything long starts) are checked without a build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "build_instrumented_tvm.sh"
CACHE = Path(os.environ.get("HIGEN_TVM_CACHE", Path.home() / ".cache" / "higen"))
SRC = Path(os.environ.get("TVM_COV_SRC", CACHE / "tvm-src"))
BUILD = Path(os.environ.get("TVM_COV_BUILD", CACHE / "tvm-cov-build"))
VENV = Path(os.environ.get("TVM_COV_VENV", CACHE / "tvm-cov-venv"))

# Runs in the build's virtualenv: three models through HiGen's TVM backend, per-test branches of the
# instrumented libraries from the gcov collector.
PROBE = r"""
import json, os, sys
import numpy as np
import onnx
from onnx import TensorProto, helper

from higen.backends.base import Target
from higen.backends.tvm import TvmBackend
from higen.coverage.gcov import GcovCollector

src, build, prefix, models = sys.argv[1:5]

def model(name, nodes, inits=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, name, [x], [y], initializer=list(inits))
    path = os.path.join(models, name + ".onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path

weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2, 3, 3], np.ones(36, np.float32))
tests = [
    model("relu", [helper.make_node("Relu", ["x"], ["y"])]),
    model("relu_again", [helper.make_node("Relu", ["x"], ["y"])]),
    model("conv", [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [weight]),
]
import tvm
backend = TvmBackend(Target.parse("tvm:llvm:O3"))
collector = GcovCollector("gcov_tvm", src, build, prefix)
collector.attach(backend)
baseline = collector.take_baseline()
new = []
for path in tests:
    collector.begin()
    compiled = backend.compile(path)
    backend.run(compiled, {"x": np.ones((1, 2, 6, 6), np.float32)})
    new.append(sorted(collector.end()))
collector.flush()  # what gcovr reads: one .gcda file per object that ran
written = sum(name.endswith(".gcda") for _, _, names in os.walk(prefix) for name in names)
print(json.dumps({"tvm": tvm.__file__, "version": tvm.__version__, "baseline": len(baseline),
                  "libraries": [path for path, _, _ in collector.libraries], "new": new, "gcda": written,
                  "problems": collector.problems}))
"""


def test_instrumented_tvm_reports_per_test_branches(tmp_path):
    python = VENV / "bin" / "python"
    if not (python.exists() and (BUILD / "lib" / "libtvm_compiler.so").exists()):
        pytest.skip(f"no instrumented TVM in {BUILD} with virtualenv {VENV}: "
                    "run experiments/build_instrumented_tvm.sh (hours; see docs/coverage.md)")
    (tmp_path / "models").mkdir()
    done = subprocess.run([str(python), "-c", PROBE, str(SRC), str(BUILD), str(tmp_path / "gcda"),
                           str(tmp_path / "models")], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert os.path.realpath(report["tvm"]).startswith(os.path.realpath(SRC) + os.sep), report["tvm"]
    assert any(os.path.realpath(p).startswith(os.path.realpath(BUILD) + os.sep) for p in report["libraries"])
    relu, relu_again, conv = report["new"]
    assert report["baseline"] > 0 and len(relu) > 100
    assert report["gcda"] > 300 and not report["problems"], report["problems"][:3]
    # keys are relative to the source tree: TVM's own sources and headers, tvm-ffi's inline headers
    assert all(key.startswith(("src/", "include/", "3rdparty/tvm-ffi/")) for key in relu), relu[:5]
    assert any(key.startswith("src/relax/") for key in relu)
    # The same model again takes (almost) only branches the first took; a convolution takes the
    # branches of Conv's own operator definition, which Relu never reaches.
    assert len(relu_again) < len(relu) / 10
    assert not any(key.startswith("src/relax/op/nn/convolution.cc:") for key in relu + relu_again)
    assert any(key.startswith("src/relax/op/nn/convolution.cc:") for key in conv)


def fake_tools(folder: Path, llvm_version: str) -> dict[str, str]:
    """PATH with stand-ins for the compilers (to inject an old LLVM), then the real PATH."""
    folder.mkdir()
    for tool in ("gcc-12", "g++-12", "ninja"):
        (folder / tool).write_text("#!/bin/sh\necho 12.2.0\n")
    (folder / "llvm-config-22").write_text(f"#!/bin/sh\necho {llvm_version}\n")
    for tool in folder.iterdir():
        tool.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "PYTHON": sys.executable}


def run_script(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HIGEN_TVM_CACHE": str(tmp_path / "cache"), **env})


@pytest.mark.skipif(not SCRIPT.exists(), reason="experiments/build_instrumented_tvm.sh is missing")
def test_build_script_refuses_an_llvm_tvm_cannot_use(tmp_path):
    done = run_script(tmp_path, fake_tools(tmp_path / "bin", "14.0.6"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "build_instrumented_tvm: error: TVM needs LLVM >= 15, llvm-config-22 is 14.0.6: apt-get install llvm-22-dev"]
    assert not (tmp_path / "cache").exists()  # refused before anything was made


@pytest.mark.skipif(not SCRIPT.exists(), reason="experiments/build_instrumented_tvm.sh is missing")
def test_build_script_refuses_a_source_folder_that_is_not_a_clone(tmp_path):
    source = tmp_path / "cache" / "tvm-src"
    source.mkdir(parents=True)
    (source / "notes.txt").write_text("mine")
    done = run_script(tmp_path, fake_tools(tmp_path / "bin", "22.1.8"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"build_instrumented_tvm: error: {source} exists but is not a git clone: remove it"]
    assert (source / "notes.txt").read_text() == "mine"
