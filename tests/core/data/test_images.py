"""Decoding single files: formats by content, orientation, colour modes, broken files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageFile

from image_factory import (
    BLUE,
    GOOD_IMAGES,
    RED,
    deny_reading,
    png_header_bomb,
    truncated_jpeg,
    write_good_images,
)
from tlstudio.core.data import images
from tlstudio.core.spec.errors import ImageError, UserError
from tlstudio.core.data.images import ImageInfo, load_rgb, probe_image


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    write_good_images(folder)
    return folder


@pytest.mark.parametrize("name", sorted(GOOD_IMAGES))
def test_every_supported_kind_loads_as_8bit_rgb(good_folder, name):
    _, fmt, (height, width) = GOOD_IMAGES[name]
    info = probe_image(good_folder / name)
    assert (info.format, info.height, info.width) == (fmt, height, width)
    pixels = load_rgb(good_folder / name)
    assert pixels.dtype == np.uint8
    assert pixels.flags.writeable
    assert pixels.shape == (height, width, 3)


def test_format_comes_from_content_not_extension(good_folder):
    assert probe_image(good_folder / "really_png.jpg") == ImageInfo("PNG", 12, 10, "RGB")
    assert tuple(load_rgb(good_folder / "really_png.jpg")[0, 0]) == RED


def test_exif_orientation_is_applied(good_folder):
    pixels = load_rgb(good_folder / "rotated.jpg").astype(int)
    # Orientation 6 means "rotate 90 degrees clockwise to show": the stored
    # left (red) half ends up on top, the right (blue) half at the bottom.
    assert pixels.shape == (40, 20, 3)
    assert np.abs(pixels[5, 10] - RED).max() < 30
    assert np.abs(pixels[35, 10] - BLUE).max() < 30


def test_transparency_is_composited_on_white(good_folder):
    pixels = load_rgb(good_folder / "rgba.png")
    assert tuple(pixels[8, 4]) == (255, 255, 255)
    assert tuple(pixels[8, 24]) == RED


def test_half_transparent_pixels_blend_with_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 128)).save(tmp_path / "half.png")
    assert tuple(load_rgb(tmp_path / "half.png")[0, 0]) == (127, 127, 127)


def test_animated_gif_gives_its_first_frame(good_folder):
    assert probe_image(good_folder / "animated.gif").mode == "P"
    assert tuple(load_rgb(good_folder / "animated.gif")[3, 3]) == RED


def test_gif_transparent_colour_becomes_white(tmp_path):
    frame = Image.new("P", (6, 6), 1)
    frame.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    frame.save(tmp_path / "clear.gif", transparency=1)
    assert tuple(load_rgb(tmp_path / "clear.gif")[2, 2]) == (255, 255, 255)


def test_greyscale_repeats_into_three_channels(good_folder):
    assert probe_image(good_folder / "grey.png").mode == "L"
    assert tuple(load_rgb(good_folder / "grey.png")[0, 0]) == (100, 100, 100)


def test_cmyk_becomes_rgb(good_folder):
    assert probe_image(good_folder / "cmyk.jpg").mode == "CMYK"
    pixel = load_rgb(good_folder / "cmyk.jpg")[8, 12].astype(int)
    assert np.abs(pixel - RED).max() < 10


def test_16_bit_greyscale_is_scaled_to_8_bits(good_folder):
    assert probe_image(good_folder / "deep.png").mode.startswith("I;16")
    row = load_rgb(good_folder / "deep.png")[0]
    assert tuple(row[0]) == (0, 0, 0)
    assert tuple(row[10]) == (255, 255, 255)
    assert tuple(row[20]) == (128, 128, 128)


def test_32_bit_and_float_tiffs_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 4), 65535, np.int32)).save(tmp_path / "int.tif")
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tif")
    assert tuple(load_rgb(tmp_path / "int.tif")[0, 0]) == (255, 255, 255)
    assert tuple(load_rgb(tmp_path / "float.tif")[0, 0]) == (128, 128, 128)


def test_size_resizes_the_whole_image(good_folder):
    pixels = load_rgb(good_folder / "rotated.jpg", size=16)
    assert pixels.shape == (16, 16, 3)
    assert np.abs(pixels[1, 8].astype(int) - RED).max() < 40
    assert np.abs(pixels[14, 8].astype(int) - BLUE).max() < 40


def test_large_jpeg_resized_with_draft_mode_keeps_its_content(tmp_path):
    Image.new("RGB", (640, 480), BLUE).save(tmp_path / "big.jpg", quality=95)
    pixels = load_rgb(tmp_path / "big.jpg", size=32)
    assert pixels.shape == (32, 32, 3)
    assert np.abs(pixels.astype(int) - BLUE).max() < 10


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.write_text("hello\n" * 20), "not an image"),
        (lambda p: Image.new("RGB", (4, 4)).save(p, format="TGA"), "unsupported format TGA"),
        (lambda p: png_header_bomb(p), "over the pixel limit (400,000,000 px"),
    ],
    ids=["empty", "text", "tga", "header-bomb"],
)
def test_bad_files_are_refused_with_a_reason(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    for read in (probe_image, load_rgb):
        with pytest.raises(ImageError) as caught:
            read(path)
        assert caught.value.reason.startswith(reason)
        assert caught.value.path == str(path)
        assert isinstance(caught.value, UserError)


def test_pixel_limit_is_read_at_call_time(tmp_path, monkeypatch):
    Image.new("RGB", (120, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match=r"over the pixel limit \(12,000 px, limit 10,000\)"):
        probe_image(tmp_path / "big.png")


def test_truncated_image_passes_the_header_check_but_not_decoding(tmp_path):
    truncated_jpeg(tmp_path / "cut.jpg")
    assert probe_image(tmp_path / "cut.jpg").format == "JPEG"
    with pytest.raises(ImageError) as caught:
        load_rgb(tmp_path / "cut.jpg")
    assert caught.value.reason == "truncated or corrupt image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_corrupt(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt image"):
        load_rgb(tmp_path / "cut.png")


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        probe_image(tmp_path / "nowhere.png")


def test_permission_denied_is_reported(tmp_path, monkeypatch):
    Image.new("RGB", (4, 4)).save(tmp_path / "locked.png")
    deny_reading(monkeypatch, images, "locked.png")
    with pytest.raises(ImageError) as caught:
        load_rgb(tmp_path / "locked.png")
    assert caught.value.reason == "cannot read: permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files whatever their mode")
def test_unreadable_file_on_disk_is_reported(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "locked.png")
    os.chmod(tmp_path / "locked.png", 0)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            probe_image(tmp_path / "locked.png")
    finally:
        os.chmod(tmp_path / "locked.png", 0o644)
