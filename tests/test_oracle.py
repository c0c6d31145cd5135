"""The differential oracle on hand-made outcomes and tensors."""

from __future__ import annotations

import numpy as np
import pytest

from higen.backends.base import REFERENCE, Outcome
from higen.oracle import (Tolerance, Verdict, compare_tensors, crash_line, first_meaningful_line, judge,
                          normalize_message)

F32 = np.float32


def ok(target: str) -> Outcome:
    return Outcome(target=target, status="ok")


@pytest.mark.parametrize("expected, actual, verdict", [
    (np.array([1.0, 2.0], F32), np.array([1.0, 2.0005], F32), Verdict.OK),          # inside fp32 tolerance
    (np.array([1.0, 2.0], F32), np.array([1.0, 2.5], F32), Verdict.MISMATCH),
    (np.array([1, 2], np.int64), np.array([1, 3], np.int64), Verdict.MISMATCH),      # integers exact
    (np.array([1.0], F32), np.array([1.0], np.float64), Verdict.DTYPE_MISMATCH),
    (np.zeros((2, 1), F32), np.zeros((1, 2), F32), Verdict.SHAPE_MISMATCH),
    (np.array([np.nan, 1.0], F32), np.array([np.nan, 1.0], F32), Verdict.OK),        # same NaN positions
    (np.array([np.nan, 1.0], F32), np.array([0.0, 1.0], F32), Verdict.NAN_INF_MISMATCH),
    (np.array([np.inf], F32), np.array([-np.inf], F32), Verdict.NAN_INF_MISMATCH),   # sign of Inf matters
    (np.array([1.0], np.float16), np.array([1.04], np.float16), Verdict.OK),         # fp16 is looser
    (np.array([1.0], np.float64), np.array([1.0 + 1e-5], np.float64), Verdict.MISMATCH),  # fp64 is tighter
    (np.array(True), np.array(False), Verdict.MISMATCH),
])
def test_compare_tensors(expected, actual, verdict):
    assert compare_tensors(expected, actual, {})[0] is verdict


def test_tolerance_override_and_narrowed_precision():
    a, b = np.array([1.0], F32), np.array([1.05], F32)
    assert compare_tensors(a, b, {})[0] is Verdict.MISMATCH
    assert compare_tensors(a, b, {"float32": Tolerance(0.1, 0.0)})[0] is Verdict.OK
    # a float64 output computed in float32 (OpenVINO CPU) is judged with float32 tolerance
    a64, b64 = np.array([1.0]), np.array([1.0 + 1e-5])
    assert compare_tensors(a64, b64, {}, precision="float32")[0] is Verdict.OK


def test_judge_blames_each_target_once_and_orders_severity():
    ref = {"y": np.array([1.0, 2.0], F32)}
    wrong = {"y": np.array([1.0, 9.0], F32)}
    outcomes = {"a": ok("a"), "b": ok("b"),
                "c": Outcome(target="c", status="crash", signal="SIGSEGV", log_tail="free(): invalid pointer")}
    outputs = {REFERENCE: ref, "a": ref, "b": wrong}
    pairs = [(REFERENCE, "a"), (REFERENCE, "b"), (REFERENCE, "c"), ("a", "b")]
    judgement = judge(outcomes, outputs, pairs, {"y": "Add"})
    assert judgement.verdict is Verdict.CRASH
    kinds = {(f.verdict, f.targets) for f in judgement.findings}
    assert kinds == {(Verdict.CRASH, ("c",)), (Verdict.MISMATCH, (REFERENCE, "b"))}  # ("a","b") not repeated
    mismatch = next(f for f in judgement.findings if f.verdict is Verdict.MISMATCH)
    assert "Add" in mismatch.signature and mismatch.output == "y" and mismatch.max_abs_error == pytest.approx(7.0)


def test_unstable_reference_is_skipped_unless_strict():
    ref = {"y": np.array([np.nan, 1.0], F32)}
    other = {"y": np.array([0.0, 1.0], F32)}
    args = ({"t": ok("t")}, {REFERENCE: ref, "t": other}, [(REFERENCE, "t")], {"y": "Log"})
    assert judge(*args).verdict is Verdict.OK
    assert judge(*args, nan_policy="strict").verdict is Verdict.NAN_INF_MISMATCH
    with pytest.raises(ValueError, match="nan policy"):
        judge(*args, nan_policy="sometimes")


def test_unsupported_only_when_nothing_worse():
    outcomes = {"t": Outcome(target="t", status="unsupported", message="NOT_IMPLEMENTED")}
    assert judge(outcomes, {}, [], {}).verdict is Verdict.UNSUPPORTED
    assert judge({"t": ok("t")}, {REFERENCE: {}, "t": {}}, [(REFERENCE, "t")], {}).verdict is Verdict.OK


def test_signatures_ignore_numbers_addresses_paths_and_node_names():
    first = ("[ONNXRuntimeError] : 1 : FAIL : Load model from /tmp/higen-ab12/t3/model.onnx failed: "
             "node '/mlist.1/Clip' at 0x7f3a2b in relu_clip_fusion.cc:83 input of 11")
    second = ("[ONNXRuntimeError] : 1 : FAIL : Load model from /dev/shm/higen-zz/t9/model.onnx failed: "
              "node '/mlist.4/Clip' at 0x55d0 in relu_clip_fusion.cc:90 input of 7")
    assert normalize_message(first) == normalize_message(second)
    assert normalize_message(first) != normalize_message(first.replace("Load model", "Run model"))


def test_signature_of_the_same_error_is_stable_across_tests():
    def error(message):
        return {"t": Outcome(target="t", status="error", stage="compile", error_type="Fail", message=message)}
    one = judge(error("Check 'rank != 0' failed at a.cpp:27:\nnode /MatMul_3"), {}, [], {})
    two = judge(error("Check 'rank != 0' failed at a.cpp:31:\nnode /MatMul_9"), {}, [], {})
    assert one.findings[0].signature == two.findings[0].signature
    assert one.findings[0].key == two.findings[0].key


def test_crash_signature_ignores_log_lines_that_name_no_error():
    """A crash's log tail is a window of the worker's log, and what it holds depends on the log level
    (coverage turns ORT's INFO lines on). Crashes at the same stage must share a signature whatever
    the window caught, so a replay without coverage matches; an error line, when there is one, counts."""
    log = "".join(f"2026-11-22 03:00:57.{k:09d} [I:onnxruntime:, graph_transformer.cc:15 Apply] "
                  f"GraphTransformer Pass{k} modified: 0 with status: OK\n" for k in range(40))

    def crash(tail):
        return {"ort": Outcome(target="ort", status="crash", stage="compile", error_type="crash", signal="SIGSEGV",
                               log_tail=tail)}
    signatures = {judge(crash(tail), {}, [], {}).findings[0].signature for tail in (log[-1500:], log[-2500:], "")}
    assert signatures == {"crash|ort|compile|SIGSEGV|"}
    assert crash_line(log + "RuntimeError: bad kernel\nlast words") == "RuntimeError: bad kernel"


def test_first_meaningful_line_skips_frames():
    text = ("Traceback (most recent call last):\n  File \"x.py\", line 3, in f\n"
            "Exception from src/inference/src/cpp/core.cpp:132:\n"
            "Check 'ok' failed at src/core/shape.hpp:27:\nmore")
    assert first_meaningful_line(text).startswith("Check 'ok' failed")
