"""The real-bug benchmark (experiments/bugbench/): entries are well formed, and one ORT entry is
validated end to end with its releases installed by pip into a temporary runtime cache; the credit
function credits the entry's own repro and refuses a healthy case with the same ops and a case
without them; an injected defect fires only when all its conditions hold. The ORT entry needs PyPI
for two old onnxruntime wheels; without it those tests are skipped, saying so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments"))

from higen.runtimes import RuntimeInstallError  # noqa: E402

from bugbench import campaigns, releases  # noqa: E402
from bugbench.credit import Creditor  # noqa: E402
from bugbench.entries import (SPLITS, SYMPTOMS, load_builder, load_entries, load_entry, with_output_types,  # noqa: E402
                              write_case, write_repro)
from bugbench.injected.defects import DEFECTS, Graph  # noqa: E402

ENTRY = REPO / "experiments" / "bugbench" / "ort-22177"  # Pad -> AveragePool fusion, two small ORT wheels


def test_every_entry_is_well_formed_and_builds_a_valid_model(tmp_path):
    entries = load_entries()
    assert len({e.id for e in entries}) == len(entries) >= 12
    for entry in entries:
        assert entry.symptom in SYMPTOMS and releases.distribution(entry.runtime)
        if entry.tier == "real":
            assert entry.url.startswith("https://github.com/") and str(entry.issue) in entry.url
        else:
            assert entry.injected["defect"] in DEFECTS and entry.affected == entry.fixed
        case = write_repro(entry, tmp_path / entry.id)  # runs onnx.checker with full_check
        model_ops = {node.op_type for node in onnx.load(str(case / "model.onnx")).graph.node}
        assert set(entry.ops) <= model_ops, f"{entry.id}: its repro lacks its own ops"
        assert np.load(case / "inputs.npz", allow_pickle=False).files
    for split in SPLITS:  # tuned on one half, reported on the other: each half needs both tiers
        assert {e.tier for e in load_entries(split=split)} == {"real", "injected"}, split


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def runtime_cache(tmp_path_factory):
    """A fresh runtime cache holding the entry's affected and fixed ONNX Runtime releases."""
    if not pypi_reachable():
        pytest.skip("PyPI is not reachable: cannot install the old onnxruntime wheels this test needs")
    root = tmp_path_factory.mktemp("runtimes")
    saved = os.environ.get("HIGEN_RUNTIME_CACHE")
    os.environ["HIGEN_RUNTIME_CACHE"] = str(root)
    entry = load_entry(ENTRY)
    try:
        for version in (entry.affected, entry.fixed):
            releases.install("ort", version)
    except RuntimeInstallError as error:
        pytest.skip(f"cannot install onnxruntime from PyPI here: {error}")
    yield root
    if saved is None:
        os.environ.pop("HIGEN_RUNTIME_CACHE", None)
    else:
        os.environ["HIGEN_RUNTIME_CACHE"] = saved


def test_validate_installs_nothing_more_and_passes_the_entry(runtime_cache):
    assert sorted(p.name for p in runtime_cache.iterdir()) == ["onnxruntime-1.20.1", "onnxruntime-1.21.0"]
    done = subprocess.run([sys.executable, "experiments/bugbench.py", "--validate", "--entries", "ort-22177",
                           "--no-install"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 of 1 entries valid (1 real)" in done.stdout


def pad_avgpool_case(folder: Path, count_include_pad: int) -> Path:
    """Pad -> AveragePool like the entry, with the pool's count_include_pad chosen by the caller."""
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[2, 2], count_include_pad=count_include_pad),
             helper.make_node("Relu", ["y"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [pads])
    model = with_output_types(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    x = np.random.default_rng(1).uniform(1, 2, (1, 1, 4, 4)).astype(np.float32)
    return write_case(model, {"x": x}, folder)


def test_credit_takes_the_bug_and_only_the_bug(runtime_cache, tmp_path):
    entry = load_entry(ENTRY)
    with Creditor(tmp_path / "work") as creditor:
        own = creditor.credit(write_repro(entry, tmp_path / "repro"), entry)
        assert own.credited, own
        assert own.checks == {"ops": True, "affected shows bug": True, "fixed clean": True, "localized": True}

        # Same ops, a different graph around them: the bug still shows, so it is still credited.
        variant = creditor.credit(pad_avgpool_case(tmp_path / "variant", count_include_pad=0), entry)
        assert variant.credited, variant

        # Same ops, but count_include_pad=1, which the fusion handles correctly: not credited.
        healthy = creditor.credit(pad_avgpool_case(tmp_path / "healthy", count_include_pad=1), entry)
        assert not healthy.credited and healthy.checks["affected shows bug"] is False, healthy

        # An unrelated case stops at the op gate, before anything runs.
        other = load_entries(only=["ov-30800"])[0]
        unrelated = creditor.credit(write_repro(other, tmp_path / "unrelated"), entry)
        assert not unrelated.credited and unrelated.reason.startswith("case lacks"), unrelated


def test_a_release_missing_from_the_cache_is_named_and_skipped(tmp_path):
    done = subprocess.run([sys.executable, "experiments/bugbench.py", "--validate", "--entries", "ort-22177",
                           "--no-install"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HIGEN_RUNTIME_CACHE": str(tmp_path), "COLUMNS": "200"})
    assert done.returncode == 1
    assert "ort@1.20.1 is not in the runtime cache" in done.stdout and "0 of 1 entries valid" in done.stdout


def test_injected_defects_fire_only_when_all_their_conditions_hold(tmp_path):
    """The planted crash needs a comparison feeding Where AND branches of different ranks: the repro
    crashes the defective worker, while the same graph with equal ranks is not credited."""
    entry = load_entries(only=["ort-inj-where-cmp-broadcast"])[0]
    model, feeds = load_builder(entry)()
    with Creditor(tmp_path / "work") as creditor:
        own = creditor.credit(write_case(model, feeds, tmp_path / "own"), entry)
        assert own.credited and own.affected.startswith("crash"), own
        feeds["y"] = np.tile(feeds["y"], (2, 1))  # same ops, both branches rank 2: one condition fails
        model.graph.input[3].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, feeds["y"].shape))
        equal = creditor.credit(write_case(model, feeds, tmp_path / "equal-ranks"), entry)
        assert not equal.credited and equal.affected == "ok", equal


@pytest.mark.parametrize("entry_id", ["ort-inj-conv-clip-f32", "ort-inj-softmax-of-matmul", "ort-inj-pool-after-pad",
                                      "ort-inj-argextreme-after-transpose"])
def test_a_two_condition_defect_needs_its_producer_straight_before_it(entry_id):
    """The medium tier fires on its repro's graph, and not once an Identity separates the trigger
    node from the producer it needs (the same ops, one condition broken)."""
    entry = load_entries(only=[entry_id])[0]
    defect = DEFECTS[entry.injected["defect"]]
    model, _ = load_builder(entry)()
    graph = Graph(model)
    fired = defect.trigger(graph)
    assert fired is not None
    position = graph.nodes.index(fired)  # shape inference keeps the node order
    trigger = model.graph.node[position]
    cut = trigger.input[0] + "_apart"
    identity = helper.make_node("Identity", [trigger.input[0]], [cut])
    trigger.input[0] = cut
    nodes = list(model.graph.node)
    nodes.insert(position, identity)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    assert defect.trigger(Graph(model)) is None


def test_campaign_crediting_finds_the_first_credited_case_of_a_run(tmp_path):
    """A run folder as higen.main leaves it: the test that saved the entry's case is the one reported."""
    entry = load_entries(only=["ort-inj-concat-of-cast"])[0]
    run = tmp_path / "run"
    write_repro(load_entries(only=["ov-30800"])[0], run / "bug_cases" / "mismatch-unrelated")
    write_repro(entry, run / "bug_cases" / "mismatch-planted")
    events = [{"event": "start", "time": 100.0},
              {"event": "test", "time": 101.0, "index": 1, "case": "mismatch-unrelated"},
              {"event": "test", "time": 102.0, "index": 2, "case": None},
              {"event": "test", "time": 107.5, "index": 3, "case": "mismatch-planted"}]
    (run / "training.log").write_text("".join(json.dumps(e) + "\n" for e in events))
    with Creditor(tmp_path / "work") as creditor:
        found = campaigns.first_credits(run, [entry], creditor)
    assert found[entry.id]["tests"] == 3 and found[entry.id]["time_s"] == 7.5
    per_bug, overall = campaigns.summarize([entry], [{"strategy": "random", "seed": 0, "found": found},
                                                     {"strategy": "random", "seed": 1, "found": {}}], [0, 1], 1800)
    assert per_bug == [{"entry": entry.id, "strategy": "random", "found": "1/2", "median_s": 7.5, "median_tests": 3}]
    assert overall[0]["bugs_per_cpu_hour"] == 1.0  # (2 + 0) / 2 seeds, each 0.5 CPU-hour
    assert overall[0]["mean_s_to_bug"] == (7.5 + 1800) / 2  # the seed that missed it counts the budget
    assert overall[0]["vs_random"] == 1.0


def test_a_report_merges_side_by_side_runs_and_refuses_a_campaign_given_twice(tmp_path):
    """Seeds run in parallel lanes (separate --out folders) are reported as one campaign set."""
    import importlib.util

    # experiments/bugbench.py, not the bugbench package of the same name
    spec = importlib.util.spec_from_file_location("bugbench_script", REPO / "experiments" / "bugbench.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    hit = {"tests": 40, "time_s": 12.0, "case": "x"}
    lanes = {"a": [{"group": "g", "strategy": "random", "seed": 0, "found": {"ov-36841": hit}}],
             "b": [{"group": "g", "strategy": "random", "seed": 1, "found": {}}]}
    for lane, results in lanes.items():
        (tmp_path / lane).mkdir()
        (tmp_path / lane / "results.json").write_text(json.dumps(results))
    merged = script.merged_results([tmp_path / "a", tmp_path / "b"])
    assert sorted(r["seed"] for r in merged) == [0, 1]
    with pytest.raises(SystemExit, match="give each campaign once"):
        script.merged_results([tmp_path / "a", tmp_path / "a"])
