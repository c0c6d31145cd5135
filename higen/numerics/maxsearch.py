"""The error-maximizing input search of ``higen maximize``: the error measure, the input space and
three searches behind one ask/tell interface. Pure numpy: evaluation happens elsewhere (workers).

**Error** (:func:`tensor_error`): for an element computed as ``a`` by the unoptimized build and
``b`` by the optimized one, ``|a - b| / (eps(dtype) * max(1, |a|))``: the difference in units of
the dtype's machine epsilon at the magnitude of the value (relative above 1, absolute below, like
the oracle's ``atol + rtol * |a|``), so 1 means "one rounding", float16 and float64 are on one
scale, and a value near zero cannot blow the ratio up. NaN or +-Inf on one side only (or Infs of
opposite sign) count as ``inf``, the largest error. Integer outputs use eps = 1, booleans count
1 per differing element. A model's error is the largest over elements and outputs.

**Space** (:class:`Space`): every element of every graph input is one coordinate, each input with
its own range ``[low, high]``; searches work in the unit cube (a step is a fraction of that input's
range) and :meth:`Space.decode` maps back, rounding integers and thresholding booleans.

**Searches** (:func:`make_search`): ``de`` differential evolution (current-to-pbest/1/bin with
jDE self-adapted F and CR per individual) whose first generation is edge inputs (all at the low or
high bound, the midpoint, zero, alternating bounds, one input at a bound while the others are at
the other) topped up with random ones; ``random``, uniform samples (the baseline); ``mcmc``,
parallel Metropolis chains on log error with Gaussian steps adapted towards 30% acceptance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from higen.tensors import Tensors

SEARCHES = ("de", "random", "mcmc")


def eps_of(dtype: np.dtype) -> float:
    """Machine epsilon of a float dtype; 1 for integers and booleans."""
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else 1.0


def element_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-element error of ``b`` (optimized) against ``a`` (unoptimized), as in the module doc."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return np.full(1, np.inf)
    if a.dtype == np.bool_:
        return (a != b).astype(np.float64)
    x, y = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(all="ignore"):
        errors = np.abs(x - y) / (eps_of(a.dtype) * np.maximum(1.0, np.abs(x)))
    if np.issubdtype(a.dtype, np.floating):
        same = (np.isnan(x) & np.isnan(y)) | (np.isinf(x) & (x == y))
        errors = np.where(same, 0.0, errors)
        errors = np.where(np.isnan(errors), np.inf, errors)  # NaN on one side (or inf - inf)
    return errors.ravel()


def tensor_error(a: np.ndarray, b: np.ndarray) -> float:
    """The largest element error of one tensor (0 for an empty one)."""
    errors = element_errors(np.asarray(a), np.asarray(b))
    return float(errors.max()) if errors.size else 0.0


def outputs_error(unoptimized: Tensors, optimized: Tensors) -> tuple[float, str]:
    """The model's error (largest over its outputs) and the output where it is largest; an output
    present on one side only counts as ``inf``."""
    worst, where = -1.0, ""
    for name in dict.fromkeys([*unoptimized, *optimized]):
        if name not in unoptimized or name not in optimized:
            return math.inf, name
        error = tensor_error(unoptimized[name], optimized[name])
        if error > worst:
            worst, where = error, name
    return max(worst, 0.0), where


@dataclass
class Space:
    """The graph inputs as one vector of coordinates, each in its input's range."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[np.dtype]
    ranges: list[tuple[float, float]]
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)
    slices: list[slice] = field(init=False)

    def __post_init__(self) -> None:
        sizes = [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]
        bounds = np.cumsum([0, *sizes])
        self.slices = [slice(int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:])]
        self.low = np.concatenate([np.full(n, lo, float) for n, (lo, _) in zip(sizes, self.ranges)] or [np.zeros(0)])
        self.high = np.concatenate([np.full(n, hi, float) for n, (_, hi) in zip(sizes, self.ranges)] or [np.zeros(0)])

    @property
    def dim(self) -> int:
        return int(self.low.size)

    def decode(self, unit: np.ndarray) -> Tensors:
        """Tensors for a point of the unit cube (integers rounded, booleans above one half)."""
        values = self.low + np.clip(unit, 0.0, 1.0) * (self.high - self.low)
        tensors = {}
        for name, shape, dtype, part in zip(self.names, self.shapes, self.dtypes, self.slices):
            chunk = values[part]
            if dtype == np.bool_:
                tensors[name] = (np.clip(unit[part], 0, 1) > 0.5).reshape(shape)
            elif np.issubdtype(dtype, np.integer):
                tensors[name] = np.rint(chunk).astype(dtype).reshape(shape)
            else:
                tensors[name] = chunk.astype(dtype).reshape(shape)
        return tensors

    def encode(self, tensors: Tensors) -> np.ndarray:
        """The unit-cube point of given tensors (clipped into the ranges): seeds from a saved case."""
        values = np.concatenate([np.asarray(tensors[name], np.float64).ravel() for name in self.names])
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(np.clip((values - self.low) / span, 0.0, 1.0), nan=0.5)

    def edge_points(self) -> list[np.ndarray]:
        """Edge inputs in the unit cube: bounds, midpoint, zero, alternating bounds, near-constant
        inputs (a bound or the midpoint plus noise of 1e-3 of the range: cancellation in means and
        variances), one input at a bound with the others at the other."""
        n = self.dim
        alternating = (np.arange(n) % 2).astype(float)
        noise = np.random.default_rng(n).uniform(-1e-3, 1e-3, n)
        points = [np.zeros(n), np.ones(n), np.full(n, 0.5), alternating, 1.0 - alternating,
                  np.clip(1.0 - np.abs(noise), 0, 1), 0.5 + noise]
        span = self.high - self.low
        if n and np.all((self.low <= 0) & (self.high >= 0)) and np.all(span > 0):
            points.append(-self.low / span)  # zero everywhere
        if len(self.names) > 1:
            for part in self.slices:
                for bound in (0.0, 1.0):
                    point = np.full(n, 1.0 - bound)
                    point[part] = bound
                    points.append(point)
        unique: dict[bytes, np.ndarray] = {}
        for point in points:
            unique.setdefault(point.tobytes(), point)
        return list(unique.values())


class Search(Protocol):
    """Ask for candidates (points of the unit cube), tell their errors, in the same order."""

    def ask(self) -> list[np.ndarray]: ...

    def tell(self, points: list[np.ndarray], errors: list[float]) -> None: ...


def _score(error: float) -> float:
    """Errors compared as numbers; an invalid candidate (NaN: both builds failed) loses to all."""
    return -math.inf if math.isnan(error) else error


class RandomSearch:
    """Uniform samples, ``batch`` at a time: the baseline."""

    def __init__(self, space: Space, rng: np.random.Generator, batch: int):
        self.space, self.rng, self.batch = space, rng, batch

    def ask(self) -> list[np.ndarray]:
        return [self.rng.random(self.space.dim) for _ in range(self.batch)]

    def tell(self, points: list[np.ndarray], errors: list[float]) -> None:
        pass


def _reflect(point: np.ndarray) -> np.ndarray:
    """Back into the unit cube by reflection at 0 and 1."""
    point = np.abs(point)
    return np.where(point > 1, 2 - point, point).clip(0, 1)


class DifferentialEvolution:
    """DE/current-to-pbest/1/bin with jDE self-adaptation, plus a local search around the best.

    The first generation holds the given seeds, the edge inputs and random ones (at most twice the
    population): the best survive. Each later generation adds ``size // 4`` Gaussian steps from the
    best point on one input at a time, with a step size per input adapted like a (1+1)-ES (grows
    on success, shrinks on failure): DE's differences stay coarse while its population is spread,
    and an error peak is often narrow (a nearly constant row, one element at a bound).
    """

    def __init__(self, space: Space, rng: np.random.Generator, population: int,
                 seeds: list[np.ndarray] | None = None, edges: bool = True):
        self.space, self.rng, self.size = space, rng, population
        start = [*(seeds or []), *(space.edge_points() if edges else [])][:2 * population - population // 3]
        start += [rng.random(space.dim) for _ in range(max(population, len(start) + population // 3) - len(start))]
        self.pending: list[np.ndarray] = start  # the first generation: all evaluated, the best kept
        self.members: list[np.ndarray] = []
        self.scores: list[float] = []
        self.f = rng.uniform(0.5, 1.0, population)
        self.cr = rng.uniform(0.0, 1.0, population)
        self._trial_params: list[tuple[float, float]] = []
        self.sigma = np.full(len(space.slices), 0.05)  # per input, in units of its range
        self._local: list[int] = []  # the input each local trial of this generation moved

    def _local_trial(self, best: np.ndarray) -> np.ndarray:
        k = int(self.rng.integers(len(self.space.slices)))
        part = self.space.slices[k]
        size = part.stop - part.start
        share = self.rng.choice([1.0 / max(1, size), 0.1, 1.0])
        moved = self.rng.random(size) < share
        moved[self.rng.integers(size)] = True
        point = best.copy()
        point[part] = _reflect(best[part] + moved * self.rng.normal(0.0, self.sigma[k], size))
        self._local.append(k)
        return point

    def ask(self) -> list[np.ndarray]:
        if self.pending:
            return self.pending[len(self.members):]
        self._local = []
        trials, self._trial_params = [], []
        order = np.argsort(self.scores)[::-1]
        best = order[:max(1, int(math.ceil(0.2 * self.size)))]
        for i in range(self.size):
            f = self.rng.uniform(0.1, 1.0) if self.rng.random() < 0.1 else self.f[i]
            cr = self.rng.random() if self.rng.random() < 0.1 else self.cr[i]
            r1, r2 = self.rng.choice([j for j in range(self.size) if j != i], 2, replace=False)
            parent, pbest = self.members[i], self.members[int(self.rng.choice(best))]
            mutant = parent + f * (pbest - parent) + f * (self.members[r1] - self.members[r2])
            # leaving the cube: halfway back towards the parent's side of the bound (JADE)
            mutant = np.where(mutant < 0, parent / 2, np.where(mutant > 1, (parent + 1) / 2, mutant))
            cross = self.rng.random(self.space.dim) < cr
            if self.space.dim:
                cross[self.rng.integers(self.space.dim)] = True
            trials.append(np.where(cross, mutant, parent))
            self._trial_params.append((f, cr))
        if self.space.dim:
            trials += [self._local_trial(self.members[int(order[0])]) for _ in range(max(1, self.size // 4))]
        return trials

    def tell(self, points: list[np.ndarray], errors: list[float]) -> None:
        if self.pending:
            self.members += points
            self.scores += [_score(e) for e in errors]
            if len(self.members) == len(self.pending):
                keep = np.argsort(self.scores, kind="stable")[::-1][:self.size]
                self.members, self.scores = [self.members[i] for i in keep], [self.scores[i] for i in keep]
                self.pending = []
            return
        for i, (point, error) in enumerate(zip(points[:self.size], errors)):
            if _score(error) >= self.scores[i]:  # ties move too: drift along plateaus
                self.members[i], self.scores[i] = point, _score(error)
                self.f[i], self.cr[i] = self._trial_params[i]
        for k, point, error in zip(self._local, points[self.size:], errors[self.size:]):
            best = int(np.argmax(self.scores))
            if _score(error) > self.scores[best]:
                self.members[best], self.scores[best] = point, _score(error)
                self.sigma[k] = min(0.5, self.sigma[k] * 2.0)
            else:
                self.sigma[k] = max(1e-4, self.sigma[k] * 0.85)


class Metropolis:
    """``chains`` Metropolis chains on ``log(1 + error) / temperature`` with Gaussian steps on a
    random tenth of the coordinates; the step size adapts towards 30% acceptance."""

    def __init__(self, space: Space, rng: np.random.Generator, chains: int, temperature: float = 0.5):
        self.space, self.rng, self.temperature = space, rng, temperature
        self.states: list[np.ndarray] = [rng.random(space.dim) for _ in range(chains)]
        self.scores: list[float] | None = None
        self.sigma = 0.2

    def ask(self) -> list[np.ndarray]:
        if self.scores is None:
            return list(self.states)
        proposals = []
        for state in self.states:
            step = self.rng.normal(0.0, self.sigma, self.space.dim)
            step *= self.rng.random(self.space.dim) < max(0.1, 1.0 / max(1, self.space.dim))
            proposals.append(_reflect(state + step))
        return proposals

    def tell(self, points: list[np.ndarray], errors: list[float]) -> None:
        energies = [math.log1p(max(_score(e), 0.0)) if _score(e) > -math.inf else -math.inf for e in errors]
        if self.scores is None:
            self.scores = energies
            return
        accepted = 0
        for i, (point, energy) in enumerate(zip(points, energies)):
            gain = energy - self.scores[i]
            if gain >= 0 or self.rng.random() < math.exp(gain / self.temperature):
                self.states[i], self.scores[i] = point, energy
                accepted += 1
        self.sigma = float(np.clip(self.sigma * (1.1 if accepted / len(points) > 0.3 else 0.9), 0.01, 0.5))


def make_search(method: str, space: Space, seed: int, batch: int, evals: int,
                seeds: list[np.ndarray] | None = None, edges: bool = True) -> Search:
    """The search called ``method`` (see :data:`SEARCHES`), sized for ``evals`` evaluations;
    ``edges=False`` leaves the edge inputs out of DE's first generation (an ablation)."""
    rng = np.random.default_rng([seed, 0x3A5E])
    if method == "de":
        return DifferentialEvolution(space, rng, int(np.clip(round(math.sqrt(evals)), 6, 24)), seeds, edges)
    if method == "random":
        return RandomSearch(space, rng, batch)
    if method == "mcmc":
        return Metropolis(space, rng, max(1, min(batch, 4)))
    raise ValueError(f"search {method!r} unknown: choose from {', '.join(SEARCHES)}")


@dataclass
class SearchResult:
    best: np.ndarray | None
    best_error: float
    best_output: str
    curve: list[dict] = field(default_factory=list)  # per evaluation: evaluation, error, best, seconds
    stopped: str = ""  # evals | budget

    @property
    def evaluations(self) -> int:
        return len(self.curve)


#: ``evaluate(points) -> [(error, output name), ...]``, one per point, in order.
Evaluate = Callable[[list[np.ndarray]], list[tuple[float, str]]]


def run_search(search: Search, evaluate: Evaluate, evals: int, budget_s: float | None = None,
               on_progress: Callable[[SearchResult], None] | None = None) -> SearchResult:
    """Ask, evaluate, tell until ``evals`` evaluations are spent or ``budget_s`` seconds passed."""
    result = SearchResult(None, -math.inf, "")
    began = time.monotonic()
    while result.evaluations < evals:
        if budget_s is not None and time.monotonic() - began > budget_s:
            result.stopped = "budget"
            break
        points = search.ask()[:evals - result.evaluations]
        scored = evaluate(points)
        search.tell(points, [error for error, _ in scored])
        for point, (error, output) in zip(points, scored):
            if _score(error) > result.best_error or result.best is None:
                result.best, result.best_error, result.best_output = point, _score(error), output
            result.curve.append({"evaluation": result.evaluations + 1, "error": error,
                                 "best": result.best_error, "seconds": round(time.monotonic() - began, 4)})
        if on_progress:
            on_progress(result)
    result.stopped = result.stopped or "evals"
    return result
