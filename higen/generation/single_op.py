"""Single-operator graphs, one per input-dtype combination, for learning what a target supports."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import z3
from nnsmith.abstract.op import AbsOpBase, AbsTensor, Placeholder, concretize_op
from nnsmith.gir import GraphIR, InstExpr

MAX_DIM = 8


def _solved_op(op_cls: type[AbsOpBase], first_dtypes) -> tuple[AbsOpBase, list[list[int]]] | None:
    """Concretize the operator's attributes and input shapes with z3 (small shapes)."""
    params = [z3.Int(f"p{k}") for k in range(op_cls.get_num_var_param())]
    op = op_cls(*params)
    solver = z3.Solver()
    inputs: list[AbsTensor] = []
    for index, ranks in enumerate(op.inp_ranks):
        rank = inputs[0].ndims if op.same_inp_dims and inputs else min(ranks)
        tensor = AbsTensor(shape=[z3.Int(f"s{index}_{k}") for k in range(rank)], dtype=first_dtypes[index])
        solver.add(*tensor.gt_zero(), *[dim < MAX_DIM for dim in tensor.shape])
        inputs.append(tensor)
    solver.add(*op.checked_requires(inputs))
    if solver.check() != z3.sat:
        return None
    model = solver.model()
    shapes = [[model.eval(dim, model_completion=True).as_long() for dim in t.shape] for t in inputs]
    return concretize_op(op, model), shapes


def single_op_irs(op_cls: type[AbsOpBase], in_dtypes, out_dtypes) -> Iterator[tuple[tuple, GraphIR]]:
    """Yield (input dtypes, graph) for every input-dtype combination of the operator."""
    solved = _solved_op(op_cls, in_dtypes[0])
    if solved is None:
        return
    op, shapes = solved
    for dtypes in in_dtypes:
        ir = GraphIR()
        names = []
        for shape, dtype in zip(shapes, dtypes):
            placeholder = Placeholder(AbsTensor(shape, dtype)).to_input()
            names.append(ir.add_inst(InstExpr(op=placeholder, args=[])).retval())
        node = copy.deepcopy(op)
        itensors = [ir.vars[name] for name in names]
        try:
            otensors = node.checked_type_transfer(itensors)
        except Exception:
            continue
        node.bind_input_like(itensors)
        node.bind_output_like(otensors)
        ir.add_inst(InstExpr(op=node, args=names))
        yield tuple(dtypes), ir
