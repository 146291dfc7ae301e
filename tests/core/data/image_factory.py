"""Small image files of every supported kind, and broken files, for the data tests.

Each good image has a known colour and size so tests can check the decoded
pixels; each bad file comes with the skip reason the scan must report.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def jpeg_rotated(path: Path) -> None:
    """40 wide x 20 high, left half red, right half blue, EXIF orientation 6 (shown 20 x 40)."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = RED
    pixels[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif.tobytes())


def png_rgba(path: Path) -> None:
    """Left half transparent, right half opaque red."""
    pixels = np.zeros((16, 32, 4), np.uint8)
    pixels[:, 16:] = (*RED, 255)
    Image.fromarray(pixels).save(path, format="PNG")


def gif_animated(path: Path) -> None:
    """A palette GIF whose first frame is red and second blue."""
    frames = [Image.new("RGB", (24, 16), colour).convert("P") for colour in (RED, BLUE)]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def solid(colour: tuple[int, ...], mode: str = "RGB", size: tuple[int, int] = (24, 16), **save):
    """A writer for a solid-colour image in ``mode`` saved with ``save`` options."""

    def write(path: Path) -> None:
        Image.new(mode, size, colour).save(path, **save)

    return write


def png_16bit(path: Path) -> None:
    """A 16-bit greyscale PNG (mode I;16): black, white and mid-grey columns."""
    pixels = np.zeros((8, 24), np.uint16)
    pixels[:, 8:16] = 65535
    pixels[:, 16:] = 32896
    Image.fromarray(pixels).save(path, format="PNG")


def png_named_jpg(path: Path) -> None:
    """A PNG whose name ends in .jpg: the format comes from the content."""
    Image.new("RGB", (12, 10), RED).save(path, format="PNG")


# name -> (writer, format, (height, width) as shown)
GOOD_IMAGES = {
    "rotated.jpg": (jpeg_rotated, "JPEG", (40, 20)),
    "rgba.png": (png_rgba, "PNG", (16, 32)),
    "animated.gif": (gif_animated, "GIF", (16, 24)),
    "plain.bmp": (solid(RED, format="BMP"), "BMP", (16, 24)),
    "lossless.webp": (solid(BLUE, format="WEBP", lossless=True), "WEBP", (16, 24)),
    "plain.tif": (solid(RED, format="TIFF"), "TIFF", (16, 24)),
    "grey.png": (solid(100, "L", format="PNG"), "PNG", (16, 24)),
    "cmyk.jpg": (solid((0, 255, 255, 0), "CMYK", format="JPEG", quality=95), "JPEG", (16, 24)),
    "deep.png": (png_16bit, "PNG", (8, 24)),
    "really_png.jpg": (png_named_jpg, "PNG", (10, 12)),
    "large_ok.png": (solid(BLUE, size=(64, 48), format="PNG"), "PNG", (48, 64)),
}


def write_good_images(folder: Path) -> dict[str, tuple[str, tuple[int, int]]]:
    """Write every good image into ``folder``; returns name -> (format, (height, width))."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (writer, _, _) in GOOD_IMAGES.items():
        writer(folder / name)
    return {name: (fmt, shape) for name, (_, fmt, shape) in GOOD_IMAGES.items()}


def truncated_jpeg(path: Path) -> None:
    """A noisy JPEG cut in half: its header is fine, its pixel data is not."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def png_header_bomb(path: Path, width: int = 20_000, height: int = 20_000) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# name -> start of the reason the scan must give
BAD_FILES = {
    "empty.jpg": "empty file (0 bytes)",
    "notes.jpg": "not an image",
    "truncated.jpg": "truncated or corrupt image",
    "over_limit.png": "over the pixel limit (14,400 px",
    "bomb.png": "over the pixel limit (400,000,000 px",
    "image.tga": "unsupported format TGA",
    ".hidden.jpg": "hidden file",
    "locked.jpg": "cannot read: permission denied",
    "Thumbs.db": "system file",
    "__MACOSX": "macOS metadata folder (__MACOSX)",
    "loop": "symlink loop",
    "dangling.jpg": "broken symlink",
}


def write_bad_files(folder: Path) -> dict[str, str]:
    """Write files the scan must skip; returns name -> start of the expected reason.

    ``over_limit.png`` (120 x 120) is only over the limit when a test lowers
    ``images.MAX_PIXELS`` to 10,000; ``locked.jpg`` is a good image that a test
    makes unreadable; ``truncated.jpg`` passes the header scan and is caught by
    verification.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image at all\n" * 5)
    truncated_jpeg(folder / "truncated.jpg")
    Image.new("RGB", (120, 120), RED).save(folder / "over_limit.png")
    png_header_bomb(folder / "bomb.png")
    Image.new("RGB", (8, 8), RED).save(folder / "image.tga")
    Image.new("RGB", (8, 8), RED).save(folder / ".hidden.jpg", format="JPEG")
    Image.new("RGB", (8, 8), RED).save(folder / "locked.jpg", format="JPEG")
    (folder / "Thumbs.db").write_bytes(b"\0" * 32)
    macos = folder / "__MACOSX"
    macos.mkdir()
    (macos / "._rotated.jpg").write_bytes(b"\0\5\26\7" + b"\0" * 60)
    os.symlink(folder, folder / "loop")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    return BAD_FILES


def deny_reading(monkeypatch, images_module, name: str) -> None:
    """Make opening files called ``name`` fail with "permission denied" inside ``images_module``.

    Tests run as root, where ``chmod 000`` does not stop reading; this gives
    the same error the operating system would.
    """
    real_open = images_module._open_file

    def guarded_open(path):
        if os.path.basename(str(path)) == name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(images_module, "_open_file", guarded_open)
