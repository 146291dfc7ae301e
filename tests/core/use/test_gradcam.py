"""Grad-CAM: it points at the region that decides the class; tensors without a spatial map are refused."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from tlstudio.core.model.classifier import build_classifier
from tlstudio.core.spec.errors import TensorNameError, UserError
from tlstudio.core.use.gradcam import colorize, grad_cam, overlay, save_png
from tlstudio.core.spec.recipe import HeadSpec
from tlstudio.core.data.samples import make_tiny_vgg

SIZE = 32
HALF = SIZE // 2


def quadrant_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 has a bright blob somewhere in the top-left quadrant, class 1 has none;
    dim noise everywhere, so nothing but that quadrant tells the classes apart."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 90, (count, SIZE, SIZE, 3))
    labels = np.arange(count) % 2
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in np.flatnonzero(labels == 0):
        cy, cx = rng.integers(4, HALF - 4, size=2)
        images[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 12] = 255
    return images.astype(np.uint8), labels


@pytest.fixture(scope="module")
def quadrant_model():
    """A TL Studio classifier (nested base) trained, base included, until it tells the classes apart."""
    images, labels = quadrant_images(64, seed=0)
    keras.utils.set_random_seed(0)
    model = build_classifier(make_tiny_vgg(), "block3_pool:0", 2, HeadSpec(batch_norm=False), "lite")
    model.get_layer("base").trainable = True
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(images.astype(np.float32), labels, epochs=10, batch_size=16, verbose=0)
    return model


def quadrant_heat(heatmap: np.ndarray) -> list[float]:
    """Mean heat of the top-left, top-right, bottom-left and bottom-right quadrants."""
    return [
        float(heatmap[:HALF, :HALF].mean()),
        float(heatmap[:HALF, HALF:].mean()),
        float(heatmap[HALF:, :HALF].mean()),
        float(heatmap[HALF:, HALF:].mean()),
    ]


def test_the_model_learnt_the_quadrant(quadrant_model):
    images, labels = quadrant_images(20, seed=1)
    predicted = np.argmax(quadrant_model.predict(images.astype(np.float32), verbose=0), axis=1)
    assert np.mean(predicted == labels) >= 0.9


@pytest.mark.parametrize("tensor", [None, "block2_conv2:0"])
def test_grad_cam_highlights_the_deciding_quadrant(quadrant_model, tensor):
    images, labels = quadrant_images(12, seed=2)
    heats = []
    for image in images[labels == 0]:
        result = grad_cam(quadrant_model, image, tensor_name=tensor, class_index=0)
        assert result.heatmap.shape == (SIZE, SIZE) and result.heatmap.dtype == np.float32
        assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0
        assert result.class_index == 0
        assert result.probabilities.shape == (2,) and result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        heats.append(quadrant_heat(result.heatmap))
    top_left, *others = np.mean(heats, axis=0)
    assert result.tensor == (tensor or "block3_pool:0")
    assert top_left > 2 * max(others), (top_left, others)


def test_the_predicted_class_is_the_default(quadrant_model):
    images, _ = quadrant_images(2, seed=3)
    result = grad_cam(quadrant_model, images[0])
    assert result.class_index == int(np.argmax(result.probabilities))
    with pytest.raises(UserError, match="numbered 0 to 1.*class_index=5"):
        grad_cam(quadrant_model, images[0], class_index=5)


def test_any_image_size_is_resized_to_the_input(quadrant_model):
    image = np.full((50, 70, 3), 40, dtype=np.uint8)
    assert grad_cam(quadrant_model, image).heatmap.shape == (SIZE, SIZE)


def test_a_tensor_without_a_spatial_map_offers_the_nearest_one():
    model = build_classifier(make_tiny_vgg(include_top=True), "fc2:0", 2, HeadSpec(), "none")
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    expected = "needs a spatial map.*'fc1:0'.*nearest tensor with one is 'block3_pool:0'"
    with pytest.raises(TensorNameError, match=expected) as info:
        grad_cam(model, image, tensor_name="fc1:0")
    assert info.value.suggestions[0] == "block3_pool:0"
    with pytest.raises(TensorNameError, match="no tensor named 'block9_conv1:0'") as info:
        grad_cam(model, image, tensor_name="block9_conv1:0")
    assert info.value.suggestions and "input_layer:0" not in info.value.suggestions
    # The default is the cut tensor; fc2:0 has no map, so Grad-CAM looks at the last tensor that has one.
    assert grad_cam(model, image).tensor == "block3_pool:0"
    with pytest.raises(TensorNameError, match="names an operation.*use 'block2_pool:0'") as info:
        grad_cam(model, image, tensor_name="block2_pool")
    assert info.value.suggestions == ("block2_pool:0",)
    with pytest.raises(TensorNameError, match="not its input 'input_layer:0'.*'block1_conv1:0'"):
        grad_cam(model, image, tensor_name="input_layer:0")


def test_a_plain_functional_model_works_with_its_own_names():
    model = make_tiny_vgg(include_top=True, num_classes=3)
    result = grad_cam(model, np.full((SIZE, SIZE, 3), 100, dtype=np.uint8), tensor_name="block3_conv3:0")
    assert result.tensor == "block3_conv3:0" and result.heatmap.shape == (SIZE, SIZE)
    assert result.probabilities.shape == (3,)


def test_overlay_colours_and_png(tmp_path):
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    heatmap = np.zeros((8, 8), dtype=np.float32)
    heatmap[:4, :4] = 1.0
    blended = overlay(image, heatmap, alpha=1.0)
    assert blended.shape == (40, 60, 3) and blended.dtype == np.uint8
    assert tuple(blended[0, 0]) == (128, 0, 0)  # hot: jet's dark red
    assert tuple(blended[-1, -1]) == (0, 0, 128)  # cold: jet's dark blue
    assert overlay(image, heatmap, alpha=0.0).max() == 0
    assert tuple(colorize(np.array([0.0, 1.0]), "viridis")[1]) == (253, 231, 37)
    with pytest.raises(UserError, match="between 0 and 1"):
        overlay(image, heatmap, alpha=2.0)
    path = save_png(blended, tmp_path / "sub" / "cam.png")
    with Image.open(path) as saved:
        assert saved.size == (60, 40) and saved.mode == "RGB"


def _unreadable_images(folder):
    """A text file named .jpg, and a PNG cut off half-way through its pixel data."""
    text = folder / "notes.jpg"
    text.write_text("these are my notes, not a photo\n")
    png = folder / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png)
    truncated = folder / "truncated.png"
    data = png.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {"not an image": text, "truncated or corrupt": truncated}


def test_an_unreadable_image_to_explain_is_a_clear_user_error(tmp_path):
    """Grad-CAM takes pixels; the GUI's explain panel and ``tlstudio explain`` decode the file with
    load_rgb, so an unreadable file stops there with an ImageError (a UserError) naming it."""
    from tlstudio.core.spec.errors import ImageError
    from tlstudio.core.data.images import load_rgb

    for reason, path in _unreadable_images(tmp_path).items():
        with pytest.raises(ImageError) as caught:
            load_rgb(path)
        assert isinstance(caught.value, UserError)
        assert str(path) in str(caught.value) and reason in str(caught.value)
        assert "\n" not in str(caught.value)
