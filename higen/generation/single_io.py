"""The ``single-io`` method: one graph input (the others become weights) and one graph output."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, utils

from higen.tensors import Tensors


def prune_to_single_io(model: onnx.ModelProto, inputs: Tensors, reference: Tensors
                       ) -> tuple[onnx.ModelProto, Tensors, Tensors]:
    """Keep the first input and the last output; freeze other inputs to their searched values."""
    keep_input = model.graph.input[0].name
    keep_output = model.graph.output[-1].name
    frozen = [value for value in model.graph.input if value.name != keep_input]
    for value in frozen:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(inputs[value.name]), value.name))
        model.graph.input.remove(value)
    pruned = utils.Extractor(model).extract_model([keep_input], [keep_output])
    onnx.checker.check_model(pruned, full_check=True)
    return pruned, {keep_input: inputs[keep_input]}, {keep_output: reference[keep_output]}
