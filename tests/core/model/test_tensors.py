"""The tensor catalogue: names, receptive fields, cut rules, name errors, cutting."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlstudio.core.spec.errors import TensorNameError, UserError
from tlstudio.core.model.tensors import (
    catalogue,
    cut_model,
    default_cut_tensor,
    resolve_tensor,
)
from tlstudio.core.model.traced_names import graph_tensors


class _TwoHalves(keras.layers.Layer):
    """A layer with two outputs: the first and second half of the channels."""

    def call(self, x):
        half = x.shape[-1] // 2
        return x[..., :half], x[..., half:]

    def compute_output_shape(self, input_shape):
        half = input_shape[-1] // 2
        return (*input_shape[:-1], half), (*input_shape[:-1], input_shape[-1] - half)


def _residual_model() -> keras.Model:
    inputs = keras.Input((16, 16, 3), name="image_in")
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="branch_conv1")(stem)
    x = keras.layers.BatchNormalization(name="branch_bn")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="branch_conv2")(x)
    joined = keras.layers.Add(name="add_3")([stem, x])
    out = keras.layers.Activation("relu", name="out_relu")(joined)
    return keras.Model(inputs, out, name="residual")


@pytest.fixture(scope="module")
def vgg16_fields() -> dict[str, tuple[int | None, int | None]]:
    model = keras.applications.VGG16(weights=None, include_top=False)
    infos = catalogue(model)
    fields = {info.name: (info.receptive_field, info.jump) for info in infos}
    fields["input"] = (infos[0].receptive_field, infos[0].jump)
    fields["default"] = default_cut_tensor(model)
    return fields


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("block1_conv1:0", 3),
        ("block1_conv2:0", 5),
        ("block1_pool:0", 6),
        ("block3_conv3:0", 40),
        ("block5_conv3:0", 196),
        ("block5_pool:0", 212),
    ],
)
def test_vgg16_receptive_fields(vgg16_fields, name, size):
    assert vgg16_fields[name][0] == size


def test_vgg16_jumps_and_default_cut(vgg16_fields):
    assert vgg16_fields["input"] == (1, 1)
    assert vgg16_fields["block1_pool:0"][1] == 2
    assert vgg16_fields["block5_pool:0"][1] == 32
    assert vgg16_fields["default"] == "block5_pool:0"


def test_catalogue_lists_every_tensor_in_layer_order(tiny_vgg_top):
    infos = catalogue(tiny_vgg_top)
    assert [info.name for info in infos] == [f"{layer.name}:0" for layer in tiny_vgg_top.layers]
    first = infos[0]
    assert first.layer_type == "InputLayer" and not first.cuttable and "input" in first.reason
    assert all(info.cuttable and info.reason == "" for info in infos[1:])
    conv = resolve_tensor(tiny_vgg_top, "block2_conv1:0")
    layer = tiny_vgg_top.get_layer("block2_conv1")
    assert conv.layer == "block2_conv1" and conv.layer_type == "Conv2D"
    assert conv.shape == (None, 16, 16, 8)
    assert conv.params == conv.trainable_params == layer.count_params()
    assert conv.block == "block2"
    assert resolve_tensor(tiny_vgg_top, "fc1:0").block == ""


def test_tensors_without_spatial_axes_see_the_whole_input(tiny_vgg_top):
    by_name = {info.name: info for info in catalogue(tiny_vgg_top)}
    assert by_name["block3_conv3:0"].receptive_field == 40  # larger than the 32-pixel input
    for name in ("flatten:0", "fc1:0", "fc2:0", "predictions:0"):
        assert by_name[name].receptive_field == 32
        assert by_name[name].jump is None


def test_gating_branches_and_unknown_layers():
    inputs = keras.Input((16, 16, 3), name="image_in")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inputs)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    gate = keras.layers.Conv2D(4, 1, activation="sigmoid", name="excite")(gate)
    x = keras.layers.Multiply(name="gated")([x, gate])
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(4, 3, dilation_rate=2, name="dilated")(x)
    x = keras.layers.UpSampling2D(name="upsample")(x)
    by_name = {info.name: info for info in catalogue(keras.Model(inputs, x))}
    assert (by_name["conv:0"].receptive_field, by_name["conv:0"].jump) == (3, 2)
    assert (by_name["squeeze:0"].receptive_field, by_name["squeeze:0"].jump) == (16, None)
    assert (by_name["gated:0"].receptive_field, by_name["gated:0"].jump) == (3, 2)
    assert by_name["pad:0"].receptive_field == 3
    assert (by_name["dilated:0"].receptive_field, by_name["dilated:0"].jump) == (3 + 2 * 2 * 2, 2)
    assert (by_name["upsample:0"].receptive_field, by_name["upsample:0"].jump) == (None, None)


def test_frozen_layers_have_no_trainable_params(tiny_vgg):
    tiny_vgg.get_layer("block1_conv1").trainable = False
    info = resolve_tensor(tiny_vgg, "block1_conv1:0")
    assert info.params == 112 and info.trainable_params == 0


def test_residual_branch_cannot_be_cut():
    model = _residual_model()
    by_name = {info.name: info for info in catalogue(model)}
    assert by_name["stem:0"].cuttable
    assert by_name["add_3:0"].cuttable
    assert by_name["out_relu:0"].cuttable
    for name in ("branch_conv1:0", "branch_bn:0", "branch_conv2:0"):
        info = by_name[name]
        assert not info.cuttable
        assert info.reason.startswith("inside a residual branch")
        assert "'add_3'" in info.reason and "'add_3:0'" in info.reason and "'stem:0'" in info.reason
    assert by_name["branch_conv2:0"].receptive_field == 7
    assert by_name["add_3:0"].receptive_field == 7
    with pytest.raises(TensorNameError, match="residual branch") as caught:
        resolve_tensor(model, "branch_bn:0")
    assert caught.value.suggestions == ("add_3:0", "stem:0")
    assert default_cut_tensor(model) == "out_relu:0"


def test_parallel_branches_and_multi_output_layers():
    inputs = keras.Input((8, 8, 4), name="image_in")
    left, right = _TwoHalves(name="split")(inputs)
    left = keras.layers.Conv2D(2, 3, padding="same", name="left_conv")(left)
    right = keras.layers.MaxPooling2D(3, strides=1, padding="same", name="right_pool")(right)
    merged = keras.layers.Concatenate(name="merge")([left, right])
    model = keras.Model(inputs, merged)

    by_name = {info.name: info for info in catalogue(model)}
    assert ["split:0", "split:1"] == [n for n in by_name if n.startswith("split")]
    assert not by_name["split:0"].cuttable and not by_name["split:1"].cuttable
    assert by_name["left_conv:0"].reason.startswith("inside a parallel branch")
    assert "'merge'" in by_name["left_conv:0"].reason
    assert by_name["merge:0"].cuttable and by_name["merge:0"].receptive_field == 3

    with pytest.raises(TensorNameError) as caught:
        resolve_tensor(model, "split")
    assert caught.value.suggestions == ("split:0", "split:1")
    assert "2 outputs" in str(caught.value)
    with pytest.raises(TensorNameError, match="indexes 0 to 1") as caught:
        resolve_tensor(model, "split:2")
    assert caught.value.suggestions == ("split:0", "split:1")


def test_an_unused_output_is_not_cuttable():
    inputs = keras.Input((8, 8, 4), name="image_in")
    first, _ = _TwoHalves(name="split")(inputs)
    out = keras.layers.Conv2D(2, 1, name="conv")(first)
    by_name = {info.name: info for info in catalogue(keras.Model(inputs, out))}
    assert by_name["split:0"].cuttable
    assert not by_name["split:1"].cuttable and "does not use" in by_name["split:1"].reason


def test_operation_name_is_explained(tiny_vgg):
    with pytest.raises(TensorNameError) as caught:
        resolve_tensor(tiny_vgg, "block2_pool")
    assert str(caught.value) == (
        "'block2_pool' names an operation (a layer); a cut needs a tensor, which is an "
        "operation's output: use 'block2_pool:0'."
    )
    assert caught.value.suggestions == ("block2_pool:0",)


def test_wrong_output_index_names_the_valid_one(tiny_vgg):
    with pytest.raises(TensorNameError, match="only tensor is 'block2_pool:0'") as caught:
        resolve_tensor(tiny_vgg, "block2_pool:1")
    assert "block2_pool:1" in str(caught.value)
    assert caught.value.suggestions == ("block2_pool:0",)


def test_typo_gets_three_nearest_names(tiny_vgg):
    with pytest.raises(TensorNameError, match="blok2_pool:0") as caught:
        resolve_tensor(tiny_vgg, "blok2_pool:0")
    assert len(caught.value.suggestions) == 3
    assert caught.value.suggestions[0] == "block2_pool:0"
    assert set(caught.value.suggestions) <= {info.name for info in catalogue(tiny_vgg) if info.cuttable}


def test_input_cannot_be_cut(tiny_vgg):
    with pytest.raises(TensorNameError, match="input") as caught:
        resolve_tensor(tiny_vgg, "input_layer:0")
    assert isinstance(caught.value, UserError)
    assert caught.value.suggestions == ("block1_conv1:0",)


def test_resolve_accepts_surrounding_spaces(tiny_vgg):
    assert resolve_tensor(tiny_vgg, " block2_pool:0 ").name == "block2_pool:0"


def test_default_cut_tensor(tiny_vgg, tiny_vgg_top):
    assert default_cut_tensor(tiny_vgg_top) == "fc2:0"
    assert default_cut_tensor(tiny_vgg) == "block3_pool:0"


def test_default_cut_before_a_separate_softmax_layer():
    inputs = keras.Input((8,), name="features")
    x = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dense(3, name="logits")(x)
    out = keras.layers.Softmax(name="probabilities")(x)
    assert default_cut_tensor(keras.Model(inputs, out)) == "hidden:0"


def test_cut_model_shares_weights_and_matches_the_layers(tiny_vgg):
    cut = cut_model(tiny_vgg, "block2_pool:0")
    assert cut.output.shape == (None, 8, 8, 8)
    assert [layer.name for layer in cut.layers][-1] == "block2_pool"
    for layer in cut.layers:
        original = tiny_vgg.get_layer(layer.name)
        assert layer is original
        assert all(a is b for a, b in zip(layer.weights, original.weights))
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    expected = images
    for name in ("block1_conv1", "block1_conv2", "block1_pool", "block2_conv1", "block2_conv2", "block2_pool"):
        expected = tiny_vgg.get_layer(name)(expected)
    np.testing.assert_allclose(cut.predict(images, verbose=0), keras.ops.convert_to_numpy(expected), rtol=1e-6)


def test_cut_model_refuses_an_operation_name(tiny_vgg):
    with pytest.raises(TensorNameError):
        cut_model(tiny_vgg, "block2_pool")


def test_sequential_and_nested_models():
    inner_input = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_input)
    x = keras.layers.MaxPooling2D(2, name="inner_pool")(x)
    inner = keras.Model(inner_input, x, name="inner")
    outer = keras.Sequential(
        [keras.Input((16, 16, 3)), inner, keras.layers.Conv2D(4, 3, padding="same", name="outer_conv")],
        name="outer",
    )
    by_name = {info.name: info for info in catalogue(outer)}
    assert list(by_name)[-2:] == ["inner:0", "outer_conv:0"]
    assert by_name["inner:0"].layer_type == "Functional"
    assert (by_name["inner:0"].receptive_field, by_name["inner:0"].jump) == (4, 2)
    assert (by_name["outer_conv:0"].receptive_field, by_name["outer_conv:0"].jump) == (8, 2)
    assert default_cut_tensor(outer) == "outer_conv:0"


def test_a_model_without_symbolic_inputs_is_refused():
    class Bare(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UserError, match="functional or sequential"):
        catalogue(Bare(name="bare"))


def test_graph_tensors_group_traced_tensors_by_layer(tiny_vgg_top):
    tensors = graph_tensors(tiny_vgg_top)
    assert "block1_conv1/Relu:0" in tensors["block1_conv1"]
    assert "block1_conv1/BiasAdd:0" in tensors["block1_conv1"]
    assert tensors["input_layer"] == ["input_layer:0"]
    assert any(name.endswith("/Softmax:0") for name in tensors["predictions"])
    layer_names = {layer.name for layer in tiny_vgg_top.layers}
    assert set(tensors) <= layer_names
    for layer, names in tensors.items():
        assert all(name.startswith(f"{layer}/") or name == f"{layer}:0" for name in names)
        assert not any("ReadVariableOp" in name for name in names)
