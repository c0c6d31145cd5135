"""Error-maximizing input search (``higen maximize``): differential evolution against random search
and Metropolis chains, with the same number of evaluations, on crafted models whose optimized and
unoptimized builds differ only for some inputs; and the cost of one evaluation per runtime.

    nice -n 10 python experiments/bench_maximize.py [--evals 200] [--seeds 3] [--runtimes ort,tvm]
    nice -n 10 python experiments/bench_maximize.py --cost        # ms per evaluation, cache on/off
    nice -n 10 python experiments/bench_maximize.py --generated 20 --budget 120   # a folder of NNSmith models

The models (each a real ONNX graph, run by the real runtimes in HiGen's workers):

- ``layernorm``: the LayerNorm pattern ORT fuses into its LayerNormalization kernel (one-pass
  variance: cancellation when a row is nearly constant).
- ``rmsnorm``: x / sqrt(mean(x^2) + eps) * g, ORT's SimplifiedLayerNormFusion.
- ``conv_bn``: Conv + BatchNormalization, folded into the weights by ORT's ConvBNFusion.
- ``conv_mul``: Conv, Mul by a per-channel constant, Add: ConvMulFusion and ConvAddFusion fold both.
- ``matmul_scale``: Mul by 0.1 then MatMul, the scale moved into the MatMul by MatMulScaleFusion.
- ``gelu_erf``, ``bias_gelu``: x/2 (1 + erf(x/sqrt 2)) (with a bias), fused into (Bias)Gelu.
- ``div_mul``: 1/x * y, rewritten to y/x by DivMulFusion.
- ``softmax_log``: Exp, ReduceSum, Div, Log (no fusion in ORT; TVM fuses the elementwise parts).

Writes ``experiments/results/bench_maximize.csv`` (one row per model, runtime, method and seed) and
prints the table of the median best error per method.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, console, machine_note, print_table, write_csv  # noqa: E402

from higen.numerics.maximize import model_space  # noqa: E402
from higen.numerics.maxpair import PairEvaluator, PairPool, sides_for  # noqa: E402
from higen.numerics.maxsearch import SEARCHES, make_search, run_search  # noqa: E402
from higen.tensors import scratch_dir  # noqa: E402


def _model(name: str, nodes, inputs: dict[str, list[int]], output: tuple[str, list[int]],
           constants: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        [numpy_helper.from_array(np.asarray(v).astype(np.float32) if np.asarray(v).dtype.kind == "f"
                                 else np.asarray(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _uniform(seed: int, low: float, high: float, shape) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def layernorm(n: int = 64) -> onnx.ModelProto:
    node = helper.make_node
    return _model("layernorm", [
        node("ReduceMean", ["x"], ["mu"], axes=[-1]), node("Sub", ["x", "mu"], ["d"]),
        node("Pow", ["d", "two"], ["d2"]), node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        node("Add", ["var", "eps"], ["ve"]), node("Sqrt", ["ve"], ["sd"]), node("Div", ["d", "sd"], ["nrm"]),
        node("Mul", ["nrm", "g"], ["sc"]), node("Add", ["sc", "b"], ["y"])],
        {"x": [4, n]}, ("y", [4, n]),
        {"two": np.float32(2), "eps": np.float32(1e-5), "g": _uniform(2, 0.5, 1.5, n), "b": _uniform(3, -1, 1, n)})


def conv_bn(channels: int = 8) -> onnx.ModelProto:
    node = helper.make_node
    return _model("conv_bn", [
        node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"])],
        {"x": [1, 3, 8, 8]}, ("y", [1, channels, 8, 8]),
        {"w": _uniform(4, -1, 1, (channels, 3, 3, 3)), "scale": _uniform(5, 0.5, 2, channels),
         "bias": _uniform(6, -1, 1, channels), "mean": _uniform(7, -1, 1, channels), "var": _uniform(8, 0.01, 1, channels)})


def rmsnorm(n: int = 64) -> onnx.ModelProto:
    node = helper.make_node
    return _model("rmsnorm", [
        node("Pow", ["x", "two"], ["x2"]), node("ReduceMean", ["x2"], ["ms"], axes=[-1]),
        node("Add", ["ms", "eps"], ["mse"]), node("Sqrt", ["mse"], ["r"]), node("Div", ["x", "r"], ["n"]),
        node("Mul", ["n", "g"], ["y"])],
        {"x": [4, n]}, ("y", [4, n]), {"two": np.float32(2), "eps": np.float32(1e-6), "g": _uniform(11, 0.5, 1.5, n)})


def conv_mul(channels: int = 8) -> onnx.ModelProto:
    node = helper.make_node
    return _model("conv_mul", [
        node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Mul", ["c", "s"], ["m"]), node("Add", ["m", "a"], ["y"])],
        {"x": [1, 3, 8, 8]}, ("y", [1, channels, 8, 8]),
        {"w": _uniform(12, -1, 1, (channels, 3, 3, 3)), "s": _uniform(13, 0.1, 3, (channels, 1, 1)),
         "a": _uniform(14, -1, 1, (channels, 1, 1))})


def matmul_scale(k: int = 64) -> onnx.ModelProto:
    node = helper.make_node
    return _model("matmul_scale", [node("Mul", ["x", "s"], ["xs"]), node("MatMul", ["xs", "w"], ["y"])],
                  {"x": [4, k]}, ("y", [4, 8]), {"s": np.float32(0.1), "w": _uniform(9, -1, 1, (k, 8))})


def gelu(bias: bool, n: int = 64) -> onnx.ModelProto:
    node = helper.make_node
    first = [node("Add", ["x", "bias"], ["xb"])] if bias else [node("Identity", ["x"], ["xb"])]
    constants = {"half": np.float32(0.5), "one": np.float32(1), "r2": np.float32(np.sqrt(2))}
    if bias:
        constants["bias"] = _uniform(10, -1, 1, n)
    return _model("bias_gelu" if bias else "gelu_erf", [
        *first, node("Div", ["xb", "r2"], ["xd"]), node("Erf", ["xd"], ["e"]), node("Add", ["e", "one"], ["e1"]),
        node("Mul", ["xb", "e1"], ["xe"]), node("Mul", ["xe", "half"], ["y"])],
        {"x": [4, n]}, ("y", [4, n]), constants)


def div_mul(n: int = 256) -> onnx.ModelProto:
    node = helper.make_node
    return _model("div_mul", [node("Div", ["one", "x"], ["r"]), node("Mul", ["r", "y"], ["o"])],
                  {"x": [n], "y": [n]}, ("o", [n]), {"one": np.float32(1)})


def softmax_log(n: int = 128) -> onnx.ModelProto:
    node = helper.make_node
    return _model("softmax_log", [
        node("Exp", ["x"], ["e"]), node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
        node("Div", ["e", "s"], ["p"]), node("Log", ["p"], ["y"])],
        {"x": [2, n]}, ("y", [2, n]), {"axes": np.array([-1], np.int64)})


MODELS = {"layernorm": layernorm, "rmsnorm": rmsnorm, "conv_bn": conv_bn, "conv_mul": conv_mul,
          "matmul_scale": matmul_scale,
          "gelu_erf": lambda: gelu(False), "bias_gelu": lambda: gelu(True), "div_mul": div_mul,
          "softmax_log": softmax_log}
#: The searches compared; ``de-noedge``: DE without the edge inputs in its first generation (ablation).
METHODS = (*SEARCHES, "de-noedge")
#: Input ranges per model (default [0, 1]): the ranges a user would give for each.
RANGES = {"softmax_log": (-10.0, 10.0), "div_mul": (0.5, 2.0), "gelu_erf": (-4.0, 4.0), "bias_gelu": (-4.0, 4.0),
          "rmsnorm": (-1.0, 1.0), "conv_mul": (-1.0, 1.0)}


def compare(runtime: str, names: list[str], evals: int, seeds: int, work: Path) -> list[dict]:
    rows = []
    with PairPool(sides_for(runtime), work / "logs") as pool:
        for name in names:
            path = work / f"{name}.onnx"
            model = MODELS[name]()
            onnx.save(model, path)
            space = model_space(model, *RANGES.get(name, (0.0, 1.0)), {})
            for method in METHODS:
                for seed in range(seeds):
                    evaluator = PairEvaluator(pool, space, path, work)
                    began = time.perf_counter()
                    search = make_search(method.split("-")[0], space, seed, 8, evals, edges=method != "de-noedge")
                    result = run_search(search, evaluator, evals)
                    rows.append({"model": name, "runtime": runtime, "method": method, "seed": seed,
                                 "evaluations": result.evaluations, "best_error": result.best_error,
                                 "seconds": round(time.perf_counter() - began, 3)})
                    console().print(f"{runtime} {name} {method} seed {seed}: {result.best_error:.4g}")
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    table = []
    for key in dict.fromkeys((r["model"], r["runtime"]) for r in rows):
        mine = [r for r in rows if (r["model"], r["runtime"]) == key]
        row = {"model": key[0], "runtime": key[1], "evaluations": mine[0]["evaluations"],
               "seeds": len(mine) // len(METHODS)}
        best = {}
        for method in METHODS:
            values = [r["best_error"] for r in mine if r["method"] == method]
            best[method] = values
            row[f"{method} median"] = statistics.median(values)
            row[f"{method} max"] = max(values)
        pairs = list(zip(best["de"], best["random"]))
        row["de vs random: won/tied/lost"] = (f"{sum(d > r for d, r in pairs)}/{sum(d == r for d, r in pairs)}/"
                                              f"{sum(d < r for d, r in pairs)}")
        table.append(row)
    return table


def cost(work: Path, evals: int) -> list[dict]:
    """Milliseconds per evaluation on each runtime: compiled once and batched (what higen maximize
    does), compiled once and one candidate per request, and compiled for every request."""
    from higen.backends.registry import runtime_info

    rows = []
    model = conv_bn()
    path = work / "conv_bn.onnx"
    onnx.save(model, path)
    space = model_space(model, 0.0, 1.0, {})
    points = [np.random.default_rng(i).random(space.dim) for i in range(evals)]
    for runtime in ("ort", "tvm", "ov"):
        try:
            runtime_info(runtime)
        except Exception as error:  # not installed: said plainly
            console().print(f"{runtime}: skipped ({error})")
            continue
        with PairPool(sides_for(runtime), work / "logs") as pool:
            row = {"runtime": runtime, "model": "conv_bn", "evaluations": evals}
            for label, cache, batch in (("cached, batch 8", True, 8), ("cached, batch 1", True, 1),
                                        ("compile per request", False, 1)):
                evaluator = PairEvaluator(pool, space, path, work, cache=cache)
                evaluator(points[:1])  # compile once (and warm up) outside the measurement
                began = time.perf_counter()
                for start in range(0, evals, batch):
                    evaluator(points[start:start + batch])
                row[f"ms/eval {label}"] = round(1000 * (time.perf_counter() - began) / evals, 2)
            row["compile ms"] = {k: round(v * 1000, 1) for k, v in evaluator.compile_s.items()}
            rows.append(row)
    return rows


def generated(work: Path, count: int, runtime: str, budget_s: float, evals: int, out: Path) -> list[dict]:
    """``higen maximize`` over a folder of ``count`` NNSmith models (float32, up to 10 nodes, inputs
    in [0, 1], their own generated inputs as seeds) within ``budget_s``; the worst is localized."""
    from higen.generation.client import Generator
    from higen.generation.config import GenConfig
    from higen.numerics.maximize import Settings, collect_models, maximize_all

    folder = work / "generated"
    generator = Generator(work / "logs")
    generator.start()
    try:
        seed = 0
        while len(list(folder.glob("*/model.onnx"))) < count:
            generator.generate(GenConfig(seed=seed, dtypes=("float32",), max_nodes=10), folder / f"model{seed:03d}")
            seed += 1
    finally:
        generator.close()
    began = time.perf_counter()
    results = maximize_all(collect_models(folder), [runtime], Settings(evals=evals, localize_budget_s=60.0), out,
                           budget_s)
    console().print(f"{len(results)} models in {time.perf_counter() - began:.1f} s (search budget {budget_s:g} s, "
                    "localization of the worst after it)")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evals", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runtimes", default="ort,tvm")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--cost", action="store_true", help="measure the cost per evaluation instead")
    parser.add_argument("--generated", type=int, metavar="N",
                        help="instead: higen maximize over N generated models (--runtimes' first, --budget)")
    parser.add_argument("--budget", type=float, default=120.0, help="search seconds for --generated")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = scratch_dir("higen-bench-maximize-")
    args.out.mkdir(parents=True, exist_ok=True)
    console().print(machine_note())
    if args.generated:
        rows = generated(work, args.generated, args.runtimes.split(",")[0], args.budget, args.evals,
                         args.out / "maximize_generated")
        print_table("higen maximize over generated models, ranked", rows,
                    ["rank", "model", "status", "worst_error", "output", "evaluations", "ms_per_eval", "node", "pass"])
        return
    if args.cost:
        rows = cost(work, args.evals)
        print_table("cost per evaluation (both builds)", rows, rows[0].keys() if rows else [])
        write_csv(args.out / "bench_maximize_cost.csv", rows)
        return
    rows = []
    for runtime in args.runtimes.split(","):
        rows += compare(runtime, args.models.split(","), args.evals, args.seeds, work)
    write_csv(args.out / "bench_maximize.csv", rows)
    table = summarize(rows)
    print_table(f"best error found (eps units), {args.evals} evaluations per run", table, table[0].keys())


if __name__ == "__main__":
    main()
