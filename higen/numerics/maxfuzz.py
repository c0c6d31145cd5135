"""``--inputs maximize`` in a campaign: a few evaluations per valid test searching, in normal mode,
for inputs that make the optimized build differ most from the unoptimized one.

The generator builds the test as for ``gradient`` (NNSmith's search keeps every operator in its
stable domain). After the normal run, when both builds of the plan's first runtime pair ran, a small
differential evolution (:data:`EVALS` evaluations, seeded by the generator's inputs) searches each
floating-point input within the range of the generator's own values for it (integer and boolean
inputs stay as generated), in the same workers, compiling the model once (``"cache": true``).
When the search beats the generator's inputs, the test continues with the best inputs found: they
replace ``inputs.npz``, the targets run again, and, because PyTorch's reference belongs to the old
inputs, the reference file then holds the unoptimized build's outputs (so the reference pair
compares that build with itself: such a test is judged on optimized vs unoptimized only). The test's
config records it in ``extra["maximized"]`` (initial and best error, evaluations).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import numpy as np

from higen.backends.base import REFERENCE, Outcome
from higen.backends.pool import BackendPool
from higen.modes import Plan
from higen.numerics.maxpair import PairEvaluator
from higen.numerics.maxsearch import Space, make_search, run_search
from higen.tensors import load_tensors, save_tensors, scratch_dir
from higen.testcase import TestCase

#: Evaluations per test (each runs both builds once).
EVALS = 16


def runtime_pair(plan: Plan) -> tuple[str, str] | None:
    """Normal mode's (unoptimized, optimized) pair: the first compared pair without the reference;
    None in other modes."""
    if plan.mode != "normal":
        return None
    return next(((a, b) for a, b in plan.pairs if REFERENCE not in (a, b)), None)


def input_space(inputs: dict[str, np.ndarray]) -> tuple[Space | None, dict[str, np.ndarray]]:
    """The float inputs with finite values, each within its own [min, max]; the rest stay fixed."""
    searched = {name: value for name, value in inputs.items()
                if np.issubdtype(value.dtype, np.floating) and value.size and np.isfinite(value).all()}
    fixed = {name: value for name, value in inputs.items() if name not in searched}
    if not searched:
        return None, fixed
    space = Space(list(searched), [v.shape for v in searched.values()], [v.dtype for v in searched.values()],
                  [(float(v.min()), float(v.max())) for v in searched.values()])
    return space, fixed


def maximize_test(pool: BackendPool, plan: Plan, test: TestCase, outcomes: dict[str, Outcome],
                  evals: int = EVALS) -> dict[str, Outcome]:
    """The hook (module doc): the outcomes the test is judged on, with the inputs changed or not."""
    pair = runtime_pair(plan)
    if pair is None or not all(outcomes.get(name) is not None and outcomes[name].ok for name in pair):
        return outcomes
    inputs = load_tensors(test.inputs_path)
    space, fixed = input_space(inputs)
    if space is None:
        return outcomes
    work = scratch_dir("higen-maxfuzz-")
    try:
        evaluator = PairEvaluator(pool, space, test.model_path, work, options={name: {} for name in pair},
                                  fixed=fixed)
        start = space.encode(inputs)
        initial = evaluator([start])[0][0]
        search = make_search("de", space, test.config.seed, 8, evals, [start])
        result = run_search(search, evaluator, evals)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"evaluations": result.evaluations + 1, "initial_error": initial, "best_error": result.best_error,
              "pair": list(pair)}
    test.config = replace(test.config, extra={**test.config.extra, "maximized": record})
    if result.best is None or not result.best_error > initial or math.isnan(result.best_error):
        return outcomes
    save_tensors(test.inputs_path, {**fixed, **space.decode(result.best)})
    rerun = pool.run(test.model_path, test.inputs_path, test.directory)
    if rerun[pair[0]].ok:
        shutil.copyfile(rerun[pair[0]].outputs_path, test.reference_path)
    record["inputs_replaced"] = True
    return rerun
