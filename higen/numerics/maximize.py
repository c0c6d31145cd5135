"""``higen maximize MODEL.onnx|DIR --targets ort`` (the command is :mod:`higen.cli.maximize`): inputs,
within given ranges, that maximize the error between a target's optimized and unoptimized builds;
then where that error is born.

For each model and runtime:

1. **Search** (:mod:`higen.numerics.maxsearch`): differential evolution seeded by edge inputs (or
   random search, or Metropolis chains), each candidate evaluated by both builds in persistent,
   crash-isolated workers that compile the model once (``"cache": true``, see
   :class:`higen.backends.serve.CompileCache`) and run a whole generation per request.
2. **Trace** (:mod:`higen.numerics.maxtrace`): per-node error of every intermediate on the worst
   input, as a table and a picture of the graph coloured by error growth.
3. **Case**: the worst input saved as a bug case (``higen.bugs.capture``) that ``higen repro`` and
   ``higen localize`` accept. Its oracle compares unoptimized against optimized only, strictly for
   NaN/Inf, with a tolerance of a quarter of the error found (so the case shows what was found,
   however small against the default tolerances); the reference file holds the unoptimized build's
   outputs (there is no PyTorch model for a user's ONNX file).
4. **Localize** the worst models (``--localize-top``): ``higen localize`` on their cases (first
   diverging node, then the pass search).

Builds compared: ``ort:cpu:O0`` vs ``ort:cpu:O3``, ``tvm:llvm:O0`` vs ``tvm:llvm:O3`` (normal
mode's pairs, :data:`higen.modes.NORMAL_TARGETS`), and for OpenVINO, which has no optimization
level, ``ov:CPU`` with its coarse switches off (``EXECUTION_MODE_HINT=ACCURACY``,
``SNIPPETS_MODE=DISABLE``) vs ``ov:CPU`` as configured; OpenVINO runs get no case folder, since a
case cannot name compile properties.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from higen.errors import ModelError, UserError
from higen.numerics.maxpair import ModelSkipped, PairEvaluator, PairPool, sides_for
from higen.numerics.maxsearch import SearchResult, Space, make_search, outputs_error, run_search
from higen.numerics.maxtrace import origin, trace_errors
from higen.oracle import Tolerance
from higen.tensors import Tensors, load_tensors, save_tensors, scratch_dir
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def parse_ranges(text: str | None) -> dict[str, tuple[float, float]]:
    """``a=0:1,b=-1:1`` -> {"a": (0, 1), "b": (-1, 1)}; raises UserError on anything else."""
    ranges = {}
    for item in filter(None, (text or "").split(",")):
        try:
            name, bounds = item.split("=", 1)
            low, high = (float(v) for v in bounds.split(":"))
        except ValueError:
            raise UserError(f"--per-input {item!r}: write NAME=LOW:HIGH, e.g. x=0:1") from None
        if not low <= high:
            raise UserError(f"--per-input {item}: LOW must not exceed HIGH")
        ranges[name.strip()] = (low, high)
    return ranges


def model_space(model: onnx.ModelProto, low: float, high: float,
                per_input: dict[str, tuple[float, float]]) -> Space:
    """The search space of a model's graph inputs (static shapes only, as ``higen exec`` requires)."""
    from higen.exec_model import random_inputs

    try:
        specs = random_inputs(model, 0)
    except ModelError as error:
        raise ModelSkipped(str(error)) from error
    unknown = sorted(set(per_input) - set(specs))
    if unknown:
        raise ModelSkipped(f"--per-input names {', '.join(unknown)}, which the model does not take "
                           f"(inputs: {', '.join(specs)})")
    return Space(list(specs), [v.shape for v in specs.values()], [v.dtype for v in specs.values()],
                 [per_input.get(name, (low, high)) for name in specs])


@dataclass
class Settings:
    """What one ``higen maximize`` command asks for (flags of the same names)."""

    low: float = 0.0
    high: float = 1.0
    per_input: dict[str, tuple[float, float]] = field(default_factory=dict)
    search: str = "de"
    evals: int = 200
    batch: int = 8
    seed: int = 0
    timeout_s: float = 60.0
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    localize_top: int = 1
    localize_budget_s: float = 60.0


@dataclass
class ModelResult:
    """What maximizing one model on one runtime gave (a summary row and the report's content)."""

    name: str
    runtime: str
    sides: tuple[str, str]
    out_dir: Path
    status: str = "ok"  # ok | skipped
    reason: str = ""
    search: SearchResult | None = None
    eval_s: float = 0.0
    compile_s: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    exposed_error: float | None = None  # the outputs' error with intermediates exposed
    trace_method: str = ""  # intermediates | prefixes (exposing them stopped the fusion)
    origin: dict[str, Any] | None = None
    case: Path | None = None
    localization: dict[str, Any] | None = None

    @property
    def error(self) -> float:
        return self.search.best_error if self.search and self.search.best is not None else -math.inf


def maximize_model(model_path: Path, name: str, pool: PairPool, settings: Settings, out_dir: Path,
                   budget_s: float, seeds: list[Tensors] | None = None) -> ModelResult:
    """Search, trace and save the case of one model on the pool's runtime (module doc)."""
    from higen.exec_model import load_model

    labels = tuple(pool.sides)
    runtime = pool.sides[labels[1]].target.split(":")[0]
    result = ModelResult(name, runtime, labels, out_dir)
    work = scratch_dir("higen-maximize-")
    try:
        try:
            model = load_model(model_path)
        except ModelError as error:
            raise ModelSkipped(str(error)) from error
        space = model_space(model, settings.low, settings.high, settings.per_input)
        evaluator = PairEvaluator(pool, space, model_path, work)
        probe = evaluator([np.full(space.dim, 0.5)])[0]
        if math.isnan(probe[0]):
            raise ModelSkipped(evaluator.failures[-1])
        probe_s = evaluator.seconds  # the first compile is in it
        start = [space.encode(values) for values in seeds or [] if set(space.names) <= set(values)]
        search = make_search(settings.search, space, settings.seed, settings.batch, settings.evals, start)
        began = time.monotonic()
        result.search = run_search(search, evaluator, settings.evals, 0.8 * budget_s)  # the rest: the trace
        if result.search.best is None:
            raise ModelSkipped("the budget was spent before the first evaluation: raise --budget")
        result.eval_s = (evaluator.seconds - probe_s) / result.search.evaluations
        result.compile_s, result.failures = evaluator.compile_s, evaluator.failures[:5]
        out_dir.mkdir(parents=True, exist_ok=True)
        worst = space.decode(result.search.best)
        save_tensors(out_dir / "worst_inputs.npz", worst)
        trace(result, model, evaluator, worst, max(began + budget_s, time.monotonic() + 1.0))
        if runtime != "ov" and result.error > 0:
            result.case = save_case(model, worst, result, evaluator, settings, out_dir)
    except ModelSkipped as skipped:
        result.status, result.reason = "skipped", str(skipped)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def trace(result: ModelResult, model: onnx.ModelProto, evaluator: PairEvaluator, worst: Tensors,
          deadline: float) -> None:
    """Per-node errors on the worst input (:mod:`higen.numerics.maxtrace`) into ``result``: from one
    run with the intermediates exposed, or, when exposing them makes the error vanish (a fusion),
    from each node's prefix model run on its own (as ``higen localize`` does), until ``deadline``."""
    from higen.graph import expose_intermediates

    instrumented, _ = expose_intermediates(model)
    values = _run_both(evaluator, instrumented, worst)
    if values is None:
        result.failures.append("the model with its intermediates exposed fails on a build: no trace")
        return
    unoptimized, optimized = values
    final = [v.name for v in model.graph.output]
    result.exposed_error = outputs_error({k: unoptimized[k] for k in final}, {k: optimized[k] for k in final})[0]
    result.trace_method = "intermediates"
    if result.exposed_error < result.error / 4:
        result.trace_method = "prefixes"
        unoptimized, optimized = _prefix_values(model, evaluator, worst, deadline)
    result.trace = trace_errors(model, unoptimized, optimized)
    result.origin = origin(result.trace, result.error if result.trace_method == "prefixes" else result.exposed_error)


def _run_both(evaluator: PairEvaluator, model: onnx.ModelProto, inputs: Tensors) -> tuple[Tensors, Tensors] | None:
    """Both builds' outputs of ``model`` (None when either fails)."""
    path = evaluator.work / "traced.onnx"
    onnx.save(model, path)
    runs = evaluator.run([inputs], path)
    (left, left_files), (right, right_files) = runs[evaluator.unoptimized], runs[evaluator.optimized]
    if left.ok and right.ok:
        return load_tensors(left_files[0]), load_tensors(right_files[0])
    return None


def _prefix_values(model: onnx.ModelProto, evaluator: PairEvaluator, inputs: Tensors,
                   deadline: float) -> tuple[Tensors, Tensors]:
    """Each data-dependent node output computed by its own prefix model on both builds."""
    from higen.graph import data_dependent, nodes, prefix_model

    live = data_dependent(model)
    unoptimized, optimized = {}, {}
    for node in nodes(model):
        name = node.outputs[0] if node.outputs else ""
        if name not in live or time.monotonic() > deadline:
            continue
        try:
            values = _run_both(evaluator, prefix_model(model, name), inputs)
        except KeyError:  # no type known for this tensor
            continue
        if values is not None:
            unoptimized[name], optimized[name] = values[0][name], values[1][name]
    return unoptimized, optimized


def case_tolerances(unoptimized: Tensors, optimized: Tensors) -> dict[str, Tolerance]:
    """Per float dtype, rtol = atol = a quarter of the largest error found, in absolute terms: the
    oracle flags ``|a - b| > t (1 + |a|)``, and the worst element has ``|a - b| = e eps max(1, |a|)
    >= (e eps / 2)(1 + |a|)``, so it is flagged while differences four times smaller are not."""
    from higen.numerics.maxsearch import eps_of, tensor_error

    worst: dict[str, float] = {}
    for name, value in unoptimized.items():
        if np.issubdtype(value.dtype, np.floating) and name in optimized:
            error = tensor_error(value, optimized[name])
            if math.isfinite(error):
                worst[value.dtype.name] = max(worst.get(value.dtype.name, 0.0), error * eps_of(value.dtype) / 4)
    return {dtype: Tolerance(t, t) for dtype, t in worst.items() if t > 0}


def save_case(model: onnx.ModelProto, worst: Tensors, result: ModelResult, evaluator: PairEvaluator,
              settings: Settings, out_dir: Path) -> Path | None:
    """The worst input as a bug case under ``out_dir/bug_cases`` (module doc); None when the replay
    in ``capture`` sees no difference."""
    from higen.bugs.capture import capture
    from higen.bugs.store import BugStore

    runs = evaluator.run([worst])
    (left, left_files), (right, right_files) = runs[evaluator.unoptimized], runs[evaluator.optimized]
    reference = load_tensors(left_files[0]) if left.ok else {}
    tolerances = case_tolerances(reference, load_tensors(right_files[0])) if left.ok and right.ok else {}
    unoptimized, optimized = result.sides
    _, case = capture(model, worst, [unoptimized, optimized], BugStore(out_dir / "bug_cases"), reference,
                      [(unoptimized, optimized)], tolerances, "strict", settings.timeout_s, settings.memory_limit_mb)
    return out_dir / "bug_cases" / case if case else None


def collect_models(path: Path) -> list[tuple[str, Path, list[Tensors]]]:
    """(name, model file, seed inputs) for an .onnx file, a bug case folder, or a folder of either;
    a case's own inputs seed the search."""
    def case_entry(folder: Path) -> tuple[str, Path, list[Tensors]]:
        seeds = []
        if (folder / "inputs.npz").is_file():
            try:
                seeds.append(load_tensors(folder / "inputs.npz"))
            except ValueError:
                pass  # an object array (a pickle) or a broken file: searched without it
        return folder.name, folder / "model.onnx", seeds

    if path.is_file():
        return [(path.stem, path, [])]
    if not path.is_dir():
        raise UserError(f"{path} does not exist: pass an .onnx file, a bug case folder or a folder of them")
    if (path / "model.onnx").is_file():
        return [case_entry(path)]
    found = [(p.stem, p, []) if p.is_file() else case_entry(p) for p in sorted(path.iterdir())
             if (p.is_file() and p.suffix == ".onnx") or (p.is_dir() and (p / "model.onnx").is_file())]
    if not found:
        raise UserError(f"{path} holds no .onnx file and no bug case folder")
    return found


def maximize_all(models: list[tuple[str, Path, list[Tensors]]], runtimes: list[str], settings: Settings,
                 out: Path, budget_s: float, progress=None) -> list[ModelResult]:
    """Every model on every runtime within ``budget_s`` (shared equally among what is left), then
    ``higen localize`` on the worst ones, then the reports and the summary."""
    from higen.numerics.maxreport import write_model_report, write_summary

    deadline = time.monotonic() + budget_s
    results: list[ModelResult] = []
    jobs = len(models) * len(runtimes)
    for runtime in runtimes:
        with PairPool(sides_for(runtime), out / "logs", settings.timeout_s, settings.memory_limit_mb) as pool:
            for name, path, seeds in models:
                share = max(0.0, deadline - time.monotonic()) / max(1, jobs - len(results))
                folder = out / (f"{name}-{runtime}" if len(runtimes) > 1 else name)
                results.append(maximize_model(path, name, pool, settings, folder, share, seeds))
                if progress:
                    progress(results[-1], len(results), jobs)
    localize_worst(results, settings)
    for (name, path, _), result in zip([m for _ in runtimes for m in models], results):
        write_model_report(result, onnx.load(str(path)) if result.status == "ok" else None, settings)
    write_summary(results, out, settings)
    return results


def localize_worst(results: list[ModelResult], settings: Settings) -> None:
    """``higen localize`` on the cases of the ``settings.localize_top`` worst models."""
    from higen.numerics.localize import localize_case

    with_case = sorted((r for r in results if r.case), key=lambda r: -r.error)
    for result in with_case[:max(0, settings.localize_top)]:
        try:
            result.localization = localize_case(result.case, list(result.sides), True, settings.timeout_s,
                                                settings.memory_limit_mb, settings.localize_budget_s)
        except UserError as error:
            result.localization = {"answer": f"localize failed: {error}"}
