"""The classifier summary the app shows: what trains in each phase, and the base left as it was."""

from __future__ import annotations

from tlstudio.core.model.summary import build_summary
from tlstudio.core.spec.recipe import HeadSpec


def _weights(layers) -> int:
    return sum(int(w.numpy().size) for layer in layers for w in layer.weights)


def test_counts_per_phase_and_the_base_flags_are_put_back(tiny_vgg):
    flags = [layer.trainable for layer in tiny_vgg.layers]
    head = HeadSpec(hidden_units=(5,), dropout=0.25, batch_norm=True)
    summary = build_summary(tiny_vgg, "block3_pool:0", 3, head, "caffe", 2, 1, None)

    base_params = _weights(tiny_vgg.layers)
    # Head: feature BN on 8 channels (gamma, beta trainable; mean, variance frozen), Dense 8x5 without bias,
    # BN on 5 units, Dense 5x3 + 3.
    head_trainable = 2 * 8 + 8 * 5 + 2 * 5 + 5 * 3 + 3
    head_frozen = 2 * 8 + 2 * 5
    assert summary.trainable == head_trainable
    assert summary.frozen == base_params + head_frozen
    block3_conv3 = tiny_vgg.get_layer("block3_conv3")
    assert summary.fine_tuned_layers == ("block3_conv3",)
    assert summary.fine_tune_trainable == head_trainable + _weights([block3_conv3])
    assert [name for name, *_ in summary.head_layers] == [
        "head_pool", "head_bn", "head_dense_1", "head_bn_1", "head_relu_1", "head_dropout", "head_predictions"
    ]
    notes = {name: note for name, _, _, note in summary.head_layers}
    assert notes["head_dense_1"] == "5 units, no bias (batch norm follows)" and notes["head_dropout"] == "rate 0.25"
    assert summary.num_classes == 3
    assert [layer.trainable for layer in tiny_vgg.layers] == flags


def test_without_fine_tuning_nothing_more_trains(tiny_vgg):
    summary = build_summary(tiny_vgg, "block2_pool:0", 2, HeadSpec(batch_norm=False), "caffe", 0, 4, None)
    assert summary.fine_tuned_layers == () and summary.fine_tune_trainable == 0
    assert summary.trainable == 8 * 2 + 2
