"""Build one test with NNSmith as a library (runs inside the generator worker only).

NNSmith grows a valid graph by solving shape constraints with z3, materializes it as a PyTorch
model, searches inputs by gradient so no operator leaves its stable domain, and computes the
reference outputs with PyTorch. HiGen exports to ONNX itself (TorchScript exporter, opset 14):
NNSmith 0.1.0's own export call fails on current torch.
"""

from __future__ import annotations

import io
import random
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import onnx
import torch
import z3
from nnsmith.abstract.dtype import DType
from nnsmith.abstract.op import AbsOpBase, Constant, Input
from nnsmith.graph_gen import model_gen
from nnsmith.materialize.torch import TorchModelCPU, input_gen, symbolnet

from higen.generation.config import DTYPES, GenConfig
from higen.generation.single_io import prune_to_single_io
from higen.generation.tokens import graph_tokens
from higen.graph import producers
from higen.numerics.edge import edge_inputs
from higen.tensors import save_tensors

OPSET = 14
TorchModelCPU.add_seed_setter()  # model_gen's seed then also seeds torch
#: NNSmith bounds its gradient input search by wall time (20 ms); HiGen runs it on a step clock that
#: advances this much per reading instead (about one reading per search step), so a search takes the
#: same steps on an idle or a loaded machine and a test's inputs depend on its seed only.
SEARCH_CLOCK_STEP_S = 1e-3


class InvalidTest(Exception):
    """The config cannot give a valid test (no operator fits, export failed, dtypes drift)."""


def _combo_key(dtypes) -> str:
    return ",".join(str(d) for d in dtypes)


def catalogue() -> dict[str, type[AbsOpBase]]:
    """NNSmith's PyTorch-realizable operators, by name (complex-only ones left out)."""
    ops = {}
    for op in TorchModelCPU.operators():
        if op in (Input, Constant) or not op.in_dtypes:
            continue
        ops[op.name()] = op
    return ops


CATALOGUE = catalogue()
ORIGINAL_DTYPES = {name: (list(op.in_dtypes), list(op.out_dtypes)) for name, op in CATALOGUE.items()}


def select_opset(config: GenConfig, allowed: dict[str, list[str]] | None) -> list[type[AbsOpBase]]:
    """The operator classes for ``config``, their dtype combinations narrowed to the config's dtypes
    and to what every target supports (``allowed``: op name -> supported input-dtype combos)."""
    chosen = set(config.ops) if config.ops else set(CATALOGUE)
    unknown = chosen - set(CATALOGUE)
    if unknown:
        raise InvalidTest(f"unknown operators {sorted(unknown)}")
    wanted = set(config.dtypes)
    opset = []
    for name in sorted(chosen):
        op = CATALOGUE[name]
        if op.limit_domain and not config.vulnerable_ops:
            continue
        in_all, out_all = ORIGINAL_DTYPES[name]
        def fits(combo, check_support: bool) -> bool:
            return {str(d) for d in combo} <= wanted and not (
                check_support and allowed is not None and _combo_key(combo) not in allowed.get(name, ()))

        if len(in_all) == len(out_all):  # paired: an elementwise op's output dtype follows its input's
            pairs = [(i, o) for i, o in zip(in_all, out_all) if fits(i, True) and fits(o, False)]
            ins, outs = [i for i, _ in pairs], [o for _, o in pairs]
        else:
            ins = [i for i in in_all if fits(i, True)]
            outs = [o for o in out_all if fits(o, False)]
        if ins and outs:
            op.in_dtypes, op.out_dtypes = ins, outs
            opset.append(op)
    if not opset:
        raise InvalidTest(f"no operator accepts dtypes {sorted(wanted)} among {len(chosen)} chosen operators")
    return opset


def export_onnx(net: torch.nn.Module, inputs: dict[str, np.ndarray], output_names: list[str]) -> onnx.ModelProto:
    """TorchScript ONNX export (``dynamo=False``: the dynamo exporter fails on NNSmith's models)."""
    args = tuple(torch.from_numpy(np.array(value, copy=True)) for value in inputs.values())
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, buffer, input_names=list(inputs), output_names=output_names,
                          opset_version=OPSET, do_constant_folding=False, dynamo=False)
    model = onnx.load_model_from_string(buffer.getvalue())
    onnx.checker.check_model(model, full_check=True)
    return model


def check_output_dtypes(model: onnx.ModelProto, reference: dict[str, np.ndarray]) -> None:
    """Reject a model whose ONNX outputs are typed differently from PyTorch's (the TorchScript exporter
    computes some 0-d float64 ops in float32): the comparison would blame the compiler for the exporter."""
    for value in model.graph.output:
        declared = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        actual = reference[value.name].dtype
        if declared != actual:
            raise InvalidTest(f"exported output {value.name} is {declared} but PyTorch computes {actual}")


def seed_everything(seed: int) -> None:
    """Seed every generator NNSmith and PyTorch draw from before anything of the test runs (NNSmith's
    model_gen seeds them again with the same seed) and give z3 a fresh context, so a test depends on
    its seed and config only, never on the tests the worker built before."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # z3's answers depend on the ids of the terms its global context made before: start a fresh one
    z3.z3._main_ctx = None


@contextmanager
def step_clock() -> Iterator[None]:
    """NNSmith's input search reads ``time.time()`` to stop; make each reading advance a fixed step."""
    ticks = [0]

    def now() -> float:
        ticks[0] += 1
        return ticks[0] * SEARCH_CLOCK_STEP_S

    clock = SimpleNamespace(time=now)
    saved = input_gen.time, symbolnet.time
    input_gen.time = symbolnet.time = clock
    try:
        yield
    finally:
        input_gen.time, symbolnet.time = saved


def apply_input_strategy(model: TorchModelCPU, config: GenConfig) -> None:
    """gradient: search inputs so no operator leaves its stable domain (a bounded number of steps, see
    ``step_clock``); random: NNSmith's random inputs; edge: boundary values (make_oracle then computes
    the reference on them)."""
    if config.input_strategy in ("gradient", "maximize"):  # maximize searches further in the workers
        with step_clock():
            model.refine_weights()
    elif config.input_strategy == "edge":
        specs = [(name, like.shape, like.dtype.numpy()) for name, like in model.torch_model.input_like.items()]
        model.sat_inputs = {name: torch.from_numpy(value) for name, value in edge_inputs(specs, config.seed).items()}
        model.torch_model.debug_numeric = lambda tensors: None  # NNSmith refuses NaN/Inf inputs otherwise


def build_test(config: GenConfig, allowed: dict[str, list[str]] | None, out_dir: Path) -> dict[str, Any]:
    """Generate, search inputs, compute the reference, export and write the test files into out_dir."""
    seed_everything(config.seed)
    opset = select_opset(config, allowed)
    try:
        generator = model_gen(
            opset=opset, method="symbolic-cinit" if config.method == "single-io" else config.method,
            seed=config.seed, max_nodes=config.max_nodes, timeout_ms=config.z3_timeout_ms,
            max_elem_per_tensor=config.max_elems, rank_choices=list(config.ranks),
            dtype_choices=[DType.from_str(d) for d in config.dtypes],
        )
    except AssertionError as exc:  # NNSmith asserts on empty dtype/rank choices
        raise InvalidTest(f"NNSmith rejected the config: {exc or 'no dtype/rank fits the operators'}") from exc
    ir = generator.make_concrete()
    model = TorchModelCPU.from_gir(ir)
    apply_input_strategy(model, config)
    oracle = model.make_oracle()
    inputs, reference = oracle.input, oracle.output
    net = model.torch_model
    net.disable_proxy_grad()
    onnx_model = export_onnx(net, inputs, list(reference))
    check_output_dtypes(onnx_model, reference)
    if config.method == "single-io":
        onnx_model, inputs, reference = prune_to_single_io(onnx_model, inputs, reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, out_dir / "model.onnx")
    save_tensors(out_dir / "inputs.npz", inputs)
    save_tensors(out_dir / "reference.npz", reference)
    return {
        "n_nodes": ir.n_compute_inst(),
        "nnsmith_ops": sorted({inst.iexpr.op.name() for inst in ir.insts if inst.iexpr.op.name() in CATALOGUE}),
        "reference_nonfinite": any(not np.isfinite(v).all() for v in reference.values()
                                   if np.issubdtype(v.dtype, np.floating)),
        "tokens": graph_tokens(onnx_model),
        "producers": {out: op for out, op in producers(onnx_model).items() if out in reference},
    }


def single_op_models(out_dir: Path) -> list[dict[str, Any]]:
    """One tiny model per (operator, input-dtype combination), to learn what each target supports."""
    from higen.generation.single_op import single_op_irs

    entries = []
    for name, op in CATALOGUE.items():
        for index, (ins, ir) in enumerate(single_op_irs(op, *ORIGINAL_DTYPES[name])):
            entry = {"op": name, "in_dtypes": _combo_key(ins)}
            if any(str(d) not in DTYPES for d in ins):
                continue
            directory = out_dir / f"{name}-{index}"
            try:
                model = TorchModelCPU.from_gir(ir)
                oracle = model.make_oracle()
                onnx_model = export_onnx(model.torch_model, oracle.input, list(oracle.output))
                check_output_dtypes(onnx_model, oracle.output)
                directory.mkdir(parents=True)
                onnx.save(onnx_model, directory / "model.onnx")
                save_tensors(directory / "inputs.npz", oracle.input)
                entry.update(status="ok", model=str(directory / "model.onnx"), inputs=str(directory / "inputs.npz"))
            except Exception as exc:  # not exportable to ONNX: never generate it
                entry.update(status="unexportable", message=f"{type(exc).__name__}: {str(exc)[:200]}")
            entries.append(entry)
    return entries
