"""Where the error of ``higen maximize`` comes from: per-node error of every intermediate tensor,
optimized against unoptimized build, on the worst input found, and a picture of the graph.

Both builds run the model once with its data-dependent intermediates exposed as graph outputs
(:func:`higen.graph.expose_intermediates`, the instrumentation ``higen localize`` uses).
For each node output: its error (:func:`higen.numerics.maxsearch.tensor_error`), the largest error
of the node's data inputs (graph inputs and constants: 0) and the *growth*, ``log10((1 + out) /
(1 + in))``: the decades of error the node adds (0 passes errors through, negative shrinks them).
Exposing a tensor stops fusions across it, so an error that only a fusion makes may vanish here;
the report then says so (the final outputs' error with and without exposure are both given).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import onnx

from higen.graph import nodes, producer_indices
from higen.numerics.maxsearch import tensor_error
from higen.tensors import Tensors


def growth(error: float, input_error: float) -> float:
    """Decades of error a node adds (``inf`` when it makes NaN/Inf disagree from finite inputs)."""
    if math.isinf(error):
        return 0.0 if math.isinf(input_error) else math.inf
    return math.log10((1.0 + error) / (1.0 + input_error))


def trace_errors(model: onnx.ModelProto, unoptimized: Tensors, optimized: Tensors) -> list[dict[str, Any]]:
    """One row per node output both builds exposed, in topological order (module doc)."""
    errors: dict[str, float] = {}
    rows = []
    for node in nodes(model):
        feeding = max((errors.get(name, 0.0) for name in node.inputs if name), default=0.0)
        for name in node.outputs:
            if name not in unoptimized or name not in optimized:
                continue
            error = tensor_error(unoptimized[name], optimized[name])
            errors[name] = error
            rows.append({"index": node.index, "node": node.name, "op": node.op_type, "output": name,
                         "dtype": unoptimized[name].dtype.name, "error": error, "input_error": feeding,
                         "growth": growth(error, feeding)})
    return rows


def origin(rows: list[dict[str, Any]], final_error: float) -> dict[str, Any] | None:
    """The first node whose output error reaches a quarter of ``final_error`` while its inputs' does
    not: where the error the search found is born (the tolerance a saved case records, see
    :mod:`higen.numerics.maximize`)."""
    if final_error <= 0:
        return None
    threshold = final_error / 4
    return next((row for row in rows if row["error"] >= threshold > row["input_error"]), None)


def layers(model: onnx.ModelProto) -> dict[str, int]:
    """Node name -> depth (1 + the deepest producer of its inputs; graph inputs are depth 0)."""
    depth_of_tensor: dict[str, int] = {}
    depth: dict[str, int] = {}
    for node in nodes(model):
        depth[node.name] = 1 + max((depth_of_tensor.get(name, 0) for name in node.inputs if name), default=0)
        for name in node.outputs:
            depth_of_tensor[name] = depth[node.name]
    return depth


def draw_graph(model: onnx.ModelProto, rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """The graph in layers (top to bottom), each node coloured by its growth (grey: not exposed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    graph_nodes = nodes(model)
    depth = layers(model)
    by_layer: dict[int, list[str]] = {}
    for node in graph_nodes:
        by_layer.setdefault(depth[node.name], []).append(node.name)
    position = {name: (i - (len(names) - 1) / 2, -layer)
                for layer, names in by_layer.items() for i, name in enumerate(names)}
    node_growth: dict[str, float] = {}
    for row in rows:
        node_growth[row["node"]] = max(node_growth.get(row["node"], -math.inf), row["growth"])
    finite = [g for g in node_growth.values() if math.isfinite(g)]
    top = max([1.0, *finite])
    norm, cmap = Normalize(vmin=min([0.0, *finite]), vmax=top), colormaps["Reds"]
    producer = {out: graph_nodes[index].name for out, index in producer_indices(model).items()}
    width = max(6.0, 1.4 * max(len(v) for v in by_layer.values()) if by_layer else 6.0)
    fig, ax = plt.subplots(figsize=(min(width, 30), min(2 + 1.0 * len(by_layer), 40)))
    for node in graph_nodes:
        for name in node.inputs:
            if name in producer:
                (x0, y0), (x1, y1) = position[producer[name]], position[node.name]
                ax.plot([x0, x1], [y0, y1], color="0.7", lw=0.8, zorder=1)
    for node in graph_nodes:
        x, y = position[node.name]
        value = node_growth.get(node.name)
        color = "0.85" if value is None else cmap(norm(top if math.isinf(value) else value))
        ax.scatter([x], [y], s=900, color=color, edgecolors="black", linewidths=0.6, zorder=2)
        label = node.op_type if value is None else f"{node.op_type}\n{'inf' if math.isinf(value) else f'{value:+.1f}'}"
        ax.text(x, y, label, ha="center", va="center", fontsize=7, zorder=3)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="error growth (decades added by the node)")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
