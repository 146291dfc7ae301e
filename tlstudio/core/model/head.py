"""The new classifier layers put on the cut tensor.

Layer names come from :mod:`tlstudio.core.spec.anatomy` so the rest of the
app can find them: ``head_pool`` (global average pooling) or ``head_flatten``
for tensors with spatial axes, ``head_bn`` on the pooled features, then per
hidden layer ``head_dense_N``, ``head_bn_N`` and ``head_relu_N``, then
``head_dropout`` and ``head_predictions``.

With batch norm on, the pooled features are normalised and each hidden layer
is ``Dense(use_bias=False) -> BatchNormalization -> ReLU``: the norm's own
shift (beta) replaces the dense bias, which would be cancelled by the mean
subtraction anyway. With batch norm off, the dense layers keep their biases
and apply ReLU themselves.
"""

from __future__ import annotations

import keras

from tlstudio.core.spec import anatomy
from tlstudio.core.spec.recipe import HeadSpec

_GLOBAL_POOLS = {
    3: keras.layers.GlobalAveragePooling1D,
    4: keras.layers.GlobalAveragePooling2D,
    5: keras.layers.GlobalAveragePooling3D,
}


def build_head(features, num_classes: int, spec: HeadSpec):
    """The head's output (class probabilities) computed from ``features``, a KerasTensor.

    A 4-D tensor (batch, height, width, channels) is reduced by global average
    pooling (``spec.pooling == "avg"``) or flattened (``"flatten"``), and so
    are 3-D and 5-D tensors (over their one or three spatial axes); a 2-D
    tensor is used as it is. The final layer has one unit per class and
    softmax, and computes in float32 so probabilities stay exact under mixed
    precision.
    """
    x = features
    rank = len(x.shape)
    if rank > 2:
        if spec.pooling == "avg" and rank in _GLOBAL_POOLS:
            x = _GLOBAL_POOLS[rank](name=anatomy.POOL_NAME)(x)
        else:
            x = keras.layers.Flatten(name=anatomy.FLATTEN_NAME)(x)
    if spec.batch_norm:
        x = _batch_norm(spec, anatomy.FEATURE_BN_NAME)(x)
    for index, units in enumerate(spec.hidden_units, start=1):
        if spec.batch_norm:
            x = keras.layers.Dense(units, use_bias=False, name=anatomy.dense_name(index))(x)
            x = _batch_norm(spec, anatomy.hidden_bn_name(index))(x)
            x = keras.layers.ReLU(name=anatomy.relu_name(index))(x)
        else:
            x = keras.layers.Dense(units, activation="relu", name=anatomy.dense_name(index))(x)
    if spec.dropout > 0:
        x = keras.layers.Dropout(spec.dropout, name=anatomy.DROPOUT_NAME)(x)
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=anatomy.PREDICTIONS_NAME)(x)


def head_bn_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The head's batch-norm layers in model order (``head_bn``, ``head_bn_1``, ...)."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and anatomy.is_head_bn(layer)
    ]


def _batch_norm(spec: HeadSpec, name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=spec.bn_epsilon, momentum=spec.bn_momentum, name=name)
