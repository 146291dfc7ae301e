"""Decode one image file robustly, whatever its name says.

The format is decided by the file's content (Pillow's detection), never by its
extension, so a PNG called ``photo.jpg`` loads as a PNG. :func:`probe_image`
reads the header only and is cheap enough to run over tens of thousands of
files; :func:`load_rgb` decodes the pixels and turns every supported colour
mode into 8-bit RGB with the camera's EXIF orientation applied.

Colour conversions, chosen so that every image looks as a person would see it:

* transparency (RGBA, LA, PA, palette or greyscale with a transparent colour)
  is composited on **white**, the background most image viewers and web pages
  show, so a dark object on a transparent background stays visible;
* greyscale (``L``, ``1``) is repeated into the three channels;
* CMYK goes through Pillow's CMYK → RGB conversion (no colour profile);
* 16-bit greyscale (``I;16`` and its byte orders) is scaled by 255/65535;
  32-bit integer (``I``) data is read as 16-bit when it exceeds 255 and as
  8-bit otherwise; floating point (``F``) is read as 0..1 when it lies in that
  range and is clipped to 0..255 otherwise.

Failures raise :class:`~tlstudio.core.spec.errors.ImageError` whose ``reason`` is a
short phrase for scan reports ("empty file (0 bytes)", "not an image", ...).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from tlstudio.core.spec.errors import ImageError

MAX_PIXELS: int = 100_000_000
"""Images with more pixels than this are refused as possible decompression bombs.

Pillow refuses images over twice its own ``Image.MAX_IMAGE_PIXELS`` before this
limit is consulted, so raising ``MAX_PIXELS`` above that has no effect.
"""

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
"""Formats accepted, as Pillow names them (``MPO``, a multi-picture JPEG, counts as JPEG)."""

_FORMAT_ALIASES = {"MPO": "JPEG"}

# The engine enforces its own limit (MAX_PIXELS); Pillow's softer warning for
# images between its limit and ours would only repeat that check as noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSITIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_INFO_KEYS = ("exif", "Raw profile type exif")
_CORRUPT = "truncated or corrupt image"


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: format (by content), displayed size and colour mode.

    ``width`` and ``height`` are as shown after EXIF orientation, so they match
    the shape :func:`load_rgb` returns.
    """

    format: str
    width: int
    height: int
    mode: str


def probe_image(path: str | Path) -> ImageInfo:
    """Read only the header of ``path`` and say what image it holds.

    Raises ImageError when the file is empty, unreadable, not an image, in an
    unsupported format or over :data:`MAX_PIXELS`.
    """
    with _open_checked(path) as (image, image_format):
        width, height = image.size
        if _orientation(image) in (5, 6, 7, 8):
            width, height = height, width
        return ImageInfo(format=image_format, width=width, height=height, mode=image.mode)


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode ``path`` into an (H, W, 3) uint8 RGB array.

    The first frame of animated files is used and EXIF orientation applied.
    With ``size``, the whole image is resized to ``size`` x ``size`` (bilinear,
    aspect ratio not kept), as the classifier's input expects. Raises
    ImageError for the cases :func:`probe_image` refuses and for truncated or
    corrupt pixel data.
    """
    with _open_checked(path) as (image, image_format):
        try:
            if size is not None and image_format == "JPEG":
                image.draft(None, (size, size))
            image.load()
            orientation = _orientation(image)
            rgb = _to_rgb(image, str(path))
            if orientation in _TRANSPOSITIONS:
                rgb = rgb.transpose(_TRANSPOSITIONS[orientation])
            if size is not None:
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            # A copy: arrays viewing Pillow's buffer are read-only.
            return np.array(rgb, dtype=np.uint8)
        except (ImageError, MemoryError):
            raise
        except Exception as exc:
            # Decoders fed damaged files fail with many exception types (OSError
            # for truncation, SyntaxError for bad chunks, ValueError, EOFError,
            # struct.error...); each means the same thing to the user.
            raise ImageError(str(path), _CORRUPT) from exc


@contextlib.contextmanager
def _open_checked(path: str | Path) -> Iterator[tuple[Image.Image, str]]:
    """Open ``path`` lazily and yield (image, format) once the header passes every check."""
    name = str(path)
    try:
        handle = _open_file(name)
    except OSError as exc:
        raise ImageError(name, _os_reason(exc)) from exc
    with handle:
        try:
            file_stat = os.fstat(handle.fileno())
        except OSError as exc:
            raise ImageError(name, _os_reason(exc)) from exc
        if not stat.S_ISREG(file_stat.st_mode):
            raise ImageError(name, "not a regular file")
        if file_stat.st_size == 0:
            raise ImageError(name, "empty file (0 bytes)")
        try:
            image = Image.open(handle)
        except UnidentifiedImageError as exc:
            raise ImageError(name, "not an image") from exc
        except Image.DecompressionBombError as exc:
            raise ImageError(name, _pixel_limit_reason(_pixels_in_message(str(exc)))) from exc
        except MemoryError:
            raise
        except Exception as exc:
            # A recognised header that its plugin then fails to parse.
            raise ImageError(name, _CORRUPT) from exc
        with image:
            image_format = _FORMAT_ALIASES.get(image.format or "", image.format or "unknown")
            if image_format not in SUPPORTED_FORMATS:
                raise ImageError(name, f"unsupported format {image_format}")
            pixels = image.size[0] * image.size[1]
            if pixels > MAX_PIXELS:
                raise ImageError(name, _pixel_limit_reason(pixels))
            yield image, image_format


def _open_file(name: str) -> BinaryIO:
    """Open ``name`` for reading without blocking, so a FIFO where an image was never hangs the scan."""
    descriptor = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    return os.fdopen(descriptor, "rb")


def _os_reason(exc: OSError) -> str:
    """A short reason for an OS error when opening a file."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot read: permission denied"
    if exc.errno == errno.ENOENT:
        return "cannot read: file not found"
    return f"cannot read: {exc.strerror or exc}"


def _pixels_in_message(message: str) -> int | None:
    """The pixel count in Pillow's DecompressionBombError message, if present."""
    match = re.search(r"\((\d+) pixels\)", message)
    return int(match.group(1)) if match else None


def _pixel_limit_reason(pixels: int | None) -> str:
    """The skip reason for an image over the pixel limit."""
    if pixels is None:
        return "over the pixel limit"
    return f"over the pixel limit ({pixels:,} px, limit {MAX_PIXELS:,})"


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8); 1 when absent or unreadable.

    Parsing EXIF is the slowest part of a header scan, so it is done only when
    the file carries EXIF data (TIFF keeps the tag in its own header).
    """
    if image.format != "TIFF" and not any(key in image.info for key in _EXIF_INFO_KEYS):
        return 1
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:
        # A damaged EXIF block must not cost the user an otherwise good image.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Turn a loaded image of any supported mode into 8-bit RGB."""
    mode = image.mode
    if mode.startswith("I;16"):
        return _grey_to_rgb(np.asarray(image, dtype=np.float64) * (255.0 / 65535.0))
    if mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = np.clip(values, 0, 65535) * (255.0 / 65535.0)
        return _grey_to_rgb(values)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return _grey_to_rgb(values)
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageError(name, f"unsupported colour mode {mode}") from exc


def _has_transparency(image: Image.Image) -> bool:
    """Whether the image has an alpha channel or a transparent colour."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    """An RGB image from a 2-D array of grey levels on the 0..255 scale."""
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
