"""Thumbnails show what the model sees: transparency on white, tiny images enlarged crisply."""

from __future__ import annotations

from PIL import Image

from tlstudio.gui.widgets.thumbnails import load_thumbnail


def test_a_transparent_image_is_drawn_on_white(qapp, tmp_path):
    path = tmp_path / "logo.png"
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((20, 40, 200, 255), (16, 16, 48, 48))
    image.save(path)
    thumbnail = load_thumbnail(str(path), 64)
    assert thumbnail.pixelColor(2, 2).name() == "#ffffff"
    assert thumbnail.pixelColor(32, 32).name() == "#1428c8"


def test_a_tiny_image_is_enlarged_with_sharp_pixels(qapp, tmp_path):
    path = tmp_path / "digit.png"
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (10, 4, 18, 24))
    digit.save(path)
    thumbnail = load_thumbnail(str(path), 96)
    assert thumbnail.width() >= 48
    colours = {thumbnail.pixelColor(x, y).name() for x in range(thumbnail.width()) for y in range(thumbnail.height())}
    assert colours == {"#000000", "#ffffff"}  # no blurred greys


def test_captions_have_room_for_a_line_of_a_large_font(qtbot, qapp):
    from PySide6.QtGui import QFont, QFontMetrics

    from tlstudio.gui.widgets.thumbnails import ThumbnailGrid

    original = qapp.font()
    big = QFont(original)
    big.setPointSizeF(original.pointSizeF() * 2)
    qapp.setFont(big)
    try:
        grid = ThumbnailGrid()
        qtbot.addWidget(grid)
        size = grid.thumbnails.loader.size
        assert grid.gridSize().height() >= size + QFontMetrics(big).height() + 8
    finally:
        qapp.setFont(original)
