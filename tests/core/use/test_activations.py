"""Activations: the feature maps of a named tensor, and the grid of channels that shows them."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlstudio.core.use.activations import activations, channel_grid, strongest_channels
from tlstudio.core.model.classifier import build_classifier
from tlstudio.core.spec.errors import TensorNameError
from tlstudio.core.spec.recipe import HeadSpec
from tlstudio.core.data.samples import make_tiny_vgg


@pytest.fixture(scope="module")
def classifier():
    return build_classifier(make_tiny_vgg(include_top=True), "fc2:0", 3, HeadSpec(), "lite")


def test_maps_of_a_tensor_inside_the_nested_base(classifier):
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    maps = activations(classifier, image, "block2_conv1:0")
    assert maps.shape == (16, 16, 8) and maps.dtype == np.float32
    base = classifier.get_layer("base")
    probe = keras.Model(base.inputs[0], base.get_layer("block2_conv1").output)
    preprocessed = (image[None].astype(np.float32) - 127.0) / 128.0
    assert maps == pytest.approx(np.asarray(probe(preprocessed))[0], abs=1e-5)
    assert activations(classifier, image, "input_layer:0").shape == (32, 32, 3)


def test_a_tensor_without_maps_offers_one(classifier):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(TensorNameError, match="spatial map") as info:
        activations(classifier, image, "flatten:0")
    assert info.value.suggestions[0] == "block3_pool:0"


def test_channel_grid_layout_and_scaling():
    maps = np.zeros((4, 4, 5), dtype=np.float32)
    maps[:, :, 1] = np.arange(16).reshape(4, 4)
    maps[:, :, 3] = 7.0  # constant: black
    grid = channel_grid(maps, cell=8, gap=1)
    # 5 channels -> 3 columns x 2 rows of 8x8 tiles (4x4 maps enlarged twice), 1-pixel gaps between them
    assert grid.shape == (2 * 8 + 1, 3 * 8 + 2) and grid.dtype == np.uint8
    tile = grid[0:8, 9:17]
    assert tile[0, 0] == 0 and tile[-1, -1] == 255
    assert tile[0, 0] == tile[1, 1]  # nearest-neighbour enlargement
    assert grid[8, 0] == 128 and grid[0, 8] == 128  # the gaps
    assert grid[9:17, 0:8].max() == 0  # channel 3, constant
    assert grid[9:17, 9:17].max() == 0 and grid[9:17, 18:].max() == 128  # channel 4 (zeros), then an empty slot


def test_channel_grid_shows_the_strongest_channels_when_there_are_too_many():
    maps = np.zeros((2, 2, 10), dtype=np.float32)
    maps[:, :, [7, 2, 9]] = [[5.0, 3.0, 4.0]]
    assert strongest_channels(maps, 3).tolist() == [2, 7, 9]
    grid = channel_grid(maps, max_channels=3, cell=2, gap=0)
    assert grid.shape == (4, 4)  # 3 tiles -> 2 x 2 grid
    with pytest.raises(ValueError, match="height, width, channels"):
        channel_grid(np.zeros((4, 4)))
