"""Receptive fields: how much of the input image one position of a tensor sees.

The size, in input pixels, of the window one position of a tensor sees,
and the jump, the distance in input pixels between two neighbouring
positions. Both start at 1 at the input and follow the graph: a
convolution with kernel ``k``, dilation ``d`` and stride ``s`` adds
``(k - 1) * d * jump`` to the size and multiplies the jump by ``s``; a
pooling window ``k`` adds ``(k - 1) * jump`` and multiplies the jump by
its stride. The size is the theoretical one and may exceed the input
(padding fills the rest). Where branches merge, the largest field counts;
a branch that has been globally pooled (squeeze-and-excitation gating) is
ignored there, so the size is that of the convolution path. Where height
and width differ, the larger is reported. A tensor without spatial axes
(after flatten, a dense layer or global pooling) sees the whole image:
its size is reported as the input size and its jump as None.
Layers whose effect on positions is unknown (reshape, up-sampling,
transposed convolution, custom layers that change the spatial size) give
None.
"""

from __future__ import annotations

from typing import Any

from tlstudio.core.model.keras_graph import collect_nodes, node_inputs, node_of, topological_tensors

WHOLE = "whole"
"""Receptive-field marker: the tensor sees the whole input."""


def receptive_fields(topological: list[Any], inputs: list[Any]) -> dict[int, Any]:
    """Per tensor: (sizes, jumps) per spatial axis, WHOLE, or None when unknown."""
    fields: dict[int, Any] = {}
    for tensor in inputs:
        spatial = len(tensor.shape) - 2
        fields[id(tensor)] = ((1,) * spatial, (1,) * spatial) if spatial > 0 else None
    for tensor in topological:
        if id(tensor) in fields:
            continue
        node = node_of(tensor)
        incoming = [(t, fields.get(id(t))) for t in node_inputs(node)]
        fields[id(tensor)] = _field_through(node.operation, incoming, tensor)
    return fields


def _field_through(layer: Any, incoming: list[tuple[Any, Any]], output: Any) -> Any:
    """The field of ``output`` from the (tensor, field) pairs the layer reads."""
    import keras

    global_pools = (
        keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
        keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling1D,
        keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
    )  # fmt: skip
    if isinstance(layer, global_pools) or len(output.shape) <= 2:
        return WHOLE
    fields = [field for _, field in incoming]
    if not fields or None in fields:
        return None
    spatial_inputs = [tensor for tensor, field in incoming if field != WHOLE]
    spatial = [field for field in fields if field != WHOLE]
    if not spatial:
        return WHOLE
    if len(spatial) == 1:
        sizes, jumps = spatial[0]
    else:
        sizes = tuple(max(f[0][axis] for f in spatial) for axis in range(len(spatial[0][0])))
        jumps = tuple(max(f[1][axis] for f in spatial) for axis in range(len(spatial[0][1])))
    step = _layer_step(layer, len(sizes), spatial_inputs, output)
    if step is None:
        return None
    kernels, strides = step
    new_sizes = tuple(s + (k - 1) * j for s, k, j in zip(sizes, kernels, jumps))
    new_jumps = tuple(j * st for j, st in zip(jumps, strides))
    return new_sizes, new_jumps


def _layer_step(
    layer: Any, axes: int, input_tensors: list[Any], output: Any
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(effective kernel, stride) per spatial axis of one layer, or None when unknown."""
    import keras

    transposed = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    if isinstance(layer, transposed):
        return None
    if hasattr(layer, "kernel_size") and hasattr(layer, "strides"):
        kernel = _axes(layer.kernel_size, axes)
        dilation = _axes(getattr(layer, "dilation_rate", 1), axes)
        return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation)), _axes(layer.strides, axes)
    if hasattr(layer, "pool_size") and hasattr(layer, "strides"):
        pool = _axes(layer.pool_size, axes)
        strides = _axes(layer.strides if layer.strides is not None else layer.pool_size, axes)
        return pool, strides
    if isinstance(layer, keras.Model) and len(layer.inputs) == 1 and len(layer.outputs) == 1:
        inner = layer.inputs[0]
        nodes, _ = collect_nodes([inner], [layer.outputs[0]])
        fields = receptive_fields(topological_tensors(nodes, [inner]), [inner])
        field = fields.get(id(layer.outputs[0]))
        if field is None or field == WHOLE or len(field[0]) != axes:
            return None
        return field
    padding_layers = (
        keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
        keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
    )  # fmt: skip
    if isinstance(layer, padding_layers):
        return (1,) * axes, (1,) * axes
    same_positions = all(
        len(t.shape) == len(output.shape) and tuple(t.shape[1:-1]) == tuple(output.shape[1:-1])
        for t in input_tensors
    )
    return ((1,) * axes, (1,) * axes) if same_positions else None


def _axes(value: Any, axes: int) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * axes
    return tuple(int(v) for v in values[:axes])


def spatial_input_size(inputs: list[Any]) -> int | None:
    spatial = [d for d in inputs[0].shape[1:-1]] if len(inputs[0].shape) > 2 else []
    if not spatial or any(d is None for d in spatial):
        return None
    return int(max(spatial))


def report_field(field: Any, input_size: int | None) -> tuple[int | None, int | None]:
    if field is None:
        return None, None
    if field == WHOLE:
        return input_size, None
    sizes, jumps = field
    return int(max(sizes)), int(max(jumps))
