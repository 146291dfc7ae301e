"""The classifier's anatomy names the layers build_classifier really makes."""

from __future__ import annotations

from tlstudio.core.model.classifier import build_classifier
from tlstudio.core.spec import anatomy
from tlstudio.core.spec.recipe import HeadSpec


def test_anatomy_finds_the_parts_of_a_built_classifier(tiny_vgg):
    head = HeadSpec(hidden_units=(4, 3), dropout=0.5, batch_norm=True)
    model = build_classifier(tiny_vgg, "block3_pool:0", 3, head, "caffe")
    names = [layer.name for layer in anatomy.head_layers(model)]
    assert names == [
        anatomy.POOL_NAME, anatomy.FEATURE_BN_NAME,
        anatomy.dense_name(1), anatomy.hidden_bn_name(1), anatomy.relu_name(1),
        anatomy.dense_name(2), anatomy.hidden_bn_name(2), anatomy.relu_name(2),
        anatomy.DROPOUT_NAME, anatomy.PREDICTIONS_NAME,
    ]
    base = anatomy.nested_base(model)
    assert base is not None and base.name == anatomy.BASE_NAME
    assert base.layers[-1].name == "block3_pool"
    assert model.name == anatomy.CLASSIFIER_NAME
    assert model.inputs[0].name == anatomy.INPUT_NAME
    assert [layer.name for layer in model.layers if anatomy.is_head_bn(layer)] == ["head_bn", "head_bn_1", "head_bn_2"]


def test_a_model_without_a_nested_base_has_none(tiny_vgg):
    assert anatomy.nested_base(tiny_vgg) is None
    assert anatomy.head_layers(tiny_vgg) == []
