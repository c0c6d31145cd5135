"""Edge-value inputs: boundary values per dtype, mixed with ordinary random values, seeded.

Every floating-point tensor large enough holds at least one value of every class below (at random
positions); the rest of its elements are ordinary values in [-4, 4], a ``fraction`` of them replaced
by further edge values. A tensor with fewer elements than classes gets distinct classes at random.
Integer and bool tensors get their own boundary classes. Pure numpy: the generator worker uses it.

Float classes (``FLOAT_CLASSES``), each a small set of values computed for the dtype:

==============  ===========================================================================
``pos_zero``    +0                                 (Log at 0, Div by 0, Pow(0, negative))
``neg_zero``    -0                                 (sign of zero: 1/-0 = -inf, Log(-0) = -inf)
``denormal``    +-smallest and +-largest subnormal (flush-to-zero, Log/Div/Reciprocal near 0)
``min_normal``  +-smallest normal
``max_normal``  +-largest finite                   (any growth overflows)
``pos_inf``     +Inf
``neg_inf``     -Inf
``nan``         NaN                                (NaN propagation, Max/Min/Clip/Relu on NaN)
``unit_edge``   +-1 and their neighbours 1 +- ulp  (Asin/Acos domain edges, Log at 1)
``exp_edge``    the largest x with exp(x) finite and the next value up; the same around the
                point where exp(x) leaves the subnormals (Exp overflow / underflow)
``pow_edge``    the largest x with x*x finite and the next value up; the same around the
                point where x*x underflows to 0 (Pow overflow / underflow thresholds)
==============  ===========================================================================
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import numpy as np

FLOAT_CLASSES = ("pos_zero", "neg_zero", "denormal", "min_normal", "max_normal", "pos_inf", "neg_inf", "nan",
                 "unit_edge", "exp_edge", "pow_edge")
INT_CLASSES = ("zero", "one", "minus_one", "min", "max", "min_plus_one", "max_minus_one")
BOOL_CLASSES = ("true", "false")
#: Share of the non-guaranteed elements that also get an edge value.
DEFAULT_FRACTION = 0.25
#: Ordinary values: uniform in [-ORDINARY, ORDINARY] (integers: in [-8, 8], unsigned [0, 16]).
ORDINARY = 4.0


def _flip(dtype: np.dtype, inside: float, outside: float, holds) -> list[float]:
    """Adjacent dtype values [a, b] between ``inside`` and ``outside`` with ``holds(a)`` true and
    ``holds(b)`` false (``holds`` is monotone on that interval), found by bisection."""
    lo, hi = dtype.type(inside), dtype.type(outside)
    with np.errstate(all="ignore"):
        while np.nextafter(lo, hi) != hi:
            mid = dtype.type((np.float64(lo) + np.float64(hi)) / 2)
            if mid == lo or mid == hi:
                mid = np.nextafter(lo, hi)
            lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return [float(lo), float(hi)]


@lru_cache(maxsize=None)
def _float_values(name: str) -> dict[str, np.ndarray]:
    dtype = np.dtype(name)
    info = np.finfo(dtype)
    sub, tiny, top = float(info.smallest_subnormal), float(info.tiny), float(info.max)
    one = dtype.type(1)
    below, above = float(np.nextafter(one, dtype.type(0))), float(np.nextafter(one, dtype.type(2)))
    def exp(x):  # exp(x) rounded to the dtype
        return dtype.type(np.exp(np.float64(x)))

    def square(x):
        return dtype.type(np.float64(x) * np.float64(x))

    exp_over = _flip(dtype, 0.0, 2 * np.log(np.float64(top)), lambda x: np.isfinite(exp(x)))
    exp_under = _flip(dtype, 0.0, 2 * np.log(np.float64(sub)), lambda x: exp(x) != 0)
    pow_over = _flip(dtype, 1.0, np.float64(top), lambda x: np.isfinite(square(x)))
    pow_under = _flip(dtype, 1.0, 0.0, lambda x: square(x) != 0)
    values = {
        "pos_zero": [0.0],
        "neg_zero": [-0.0],
        "denormal": [sub, -sub, tiny - sub, -(tiny - sub)],
        "min_normal": [tiny, -tiny],
        "max_normal": [top, -top],
        "pos_inf": [np.inf],
        "neg_inf": [-np.inf],
        "nan": [np.nan],
        "unit_edge": [1.0, -1.0, below, -below, above, -above],
        "exp_edge": exp_over + exp_under,
        "pow_edge": pow_over + [-v for v in pow_over] + pow_under,
    }
    return {key: np.array(vals, dtype=dtype) for key, vals in values.items()}


@lru_cache(maxsize=None)
def _int_values(name: str) -> dict[str, np.ndarray]:
    dtype = np.dtype(name)
    info = np.iinfo(dtype)
    values = {"zero": [0], "one": [1], "minus_one": [-1], "min": [info.min], "max": [info.max],
              "min_plus_one": [info.min + 1], "max_minus_one": [info.max - 1]}
    if info.min == 0:  # unsigned: no -1, and min / min + 1 are zero / one already
        values = {k: v for k, v in values.items() if k not in ("minus_one", "min", "min_plus_one")}
    return {key: np.array(vals, dtype=dtype) for key, vals in values.items()}


def edge_values(dtype) -> dict[str, np.ndarray]:
    """Class name -> the boundary values of that class for ``dtype`` (a numpy dtype or its name)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return {"true": np.array([True]), "false": np.array([False])}
    if np.issubdtype(dtype, np.floating):
        return _float_values(dtype.name)
    if np.issubdtype(dtype, np.integer):
        return _int_values(dtype.name)
    raise TypeError(f"no edge values for dtype {dtype}")


def _ordinary(rng: np.random.Generator, size: int, dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return rng.random(size) < 0.5
    if np.issubdtype(dtype, np.integer):
        low = 0 if np.iinfo(dtype).min == 0 else -8
        return rng.integers(low, low + 17, size).astype(dtype)
    return rng.uniform(-ORDINARY, ORDINARY, size).astype(dtype)


def edge_tensor(shape: Iterable[int], dtype, rng: np.random.Generator,
                fraction: float = DEFAULT_FRACTION) -> np.ndarray:
    """One tensor: every edge class at least once when it has room, the rest mixed (see module doc)."""
    shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    pools = list(edge_values(dtype).values())
    out = _ordinary(rng, size, dtype)
    positions = rng.permutation(size)
    guaranteed = min(size, len(pools))
    classes = np.concatenate([rng.permutation(len(pools))[:guaranteed],
                              rng.integers(0, len(pools), size - guaranteed)])
    chosen = np.arange(size) < guaranteed
    chosen[guaranteed:] = rng.random(size - guaranteed) < fraction
    for position, klass in zip(positions[chosen], classes[chosen]):
        pool = pools[klass]
        out[position] = pool[rng.integers(len(pool))]
    return out.reshape(shape)


def edge_inputs(specs: Iterable[tuple[str, Iterable[int], object]], seed: int,
                fraction: float = DEFAULT_FRACTION) -> dict[str, np.ndarray]:
    """Edge-value tensors for ``(name, shape, dtype)`` specs, reproducible from ``seed``."""
    rng = np.random.default_rng([seed, 0xED6E])
    return {name: edge_tensor(shape, dtype, rng, fraction) for name, shape, dtype in specs}


def classes_present(values: np.ndarray) -> set[str]:
    """Which edge classes of ``values.dtype`` occur in ``values`` (the sign of zero counts)."""
    flat = np.asarray(values).ravel()
    present = set()
    for name, pool in edge_values(flat.dtype).items():
        for value in pool:
            if np.issubdtype(flat.dtype, np.floating) and np.isnan(value):
                hit = np.isnan(flat).any()
            elif np.issubdtype(flat.dtype, np.floating) and value == 0:
                hit = ((flat == 0) & (np.signbit(flat) == np.signbit(value))).any()
            else:
                hit = (flat == value).any()
            if hit:
                present.add(name)
                break
    return present
