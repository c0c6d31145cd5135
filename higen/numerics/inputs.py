"""The input strategy: ``--inputs gradient|random|edge|maximize`` for campaigns (the flag is in
:mod:`higen.cli.run`), and the same words (or an .npz path) for ``higen exec``.

Campaign: the strategy is a GenConfig field (``inputs``), so it rides on the campaign's base config
and every proposed config inherits it. ``gradient`` keeps NNSmith's search (a strategy may still
switch ``input_search`` off per test, which makes that test ``random``); ``random`` never searches;
``edge`` feeds boundary values (:mod:`higen.numerics.edge`), and the generator worker recomputes the
PyTorch reference for them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx

from higen.errors import UserError
from higen.generation.config import GenConfig
from higen.numerics.edge import edge_inputs
from higen.tensors import Tensors, load_tensors


def with_inputs(base: GenConfig, inputs: str) -> GenConfig:
    """The campaign's base config with the input strategy set (every proposed config inherits it)."""
    return replace(base, inputs=inputs)


def edge_inputs_for_model(model: onnx.ModelProto, seed: int) -> Tensors:
    """Edge-value inputs for every graph input of an ONNX model, reproducible from ``seed``; names,
    shapes and dtypes as ``higen exec`` reads them (which also refuses dynamic shapes)."""
    from higen.exec_model import random_inputs

    return edge_inputs([(name, value.shape, value.dtype) for name, value in random_inputs(model, seed).items()], seed)


def exec_inputs(model: onnx.ModelProto, value: str | Path | None, seed: int) -> Tensors:
    """What ``higen exec --inputs VALUE`` means: an .npz file, ``random`` (also when absent) or ``edge``;
    ``gradient`` needs NNSmith's PyTorch model, which a bare ONNX file does not have."""
    from higen.exec_model import random_inputs

    text = None if value is None else str(value)
    if text is not None and Path(text).is_file():
        return load_tensors(text)
    if text in (None, "random"):
        return random_inputs(model, seed)
    if text == "edge":
        return edge_inputs_for_model(model, seed)
    if text == "gradient":
        raise UserError("--inputs gradient needs NNSmith's PyTorch model: use random, edge or an .npz file")
    raise UserError(f"--inputs {text}: no such file (or write random or edge)")
