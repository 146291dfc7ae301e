"""A 2-D map of the cut features: PCA, then t-SNE (scikit-learn), and a PNG drawn without Qt.

Images the base sees as alike land close together, so a class that splits
into islands, a class that overlaps another, a mislabelled image inside the
wrong cluster or an outlier far from all of them show at a glance. PCA first
keeps the 50 strongest directions (fast, and t-SNE works better on them);
t-SNE then lays the images out so that near neighbours stay near. Distances
between far-apart clusters in a t-SNE map mean little; only neighbourhoods do.
With fewer than 5 images the PCA projection is used as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlstudio.core.spec.errors import DataError, UserError
from tlstudio.core.spec.events import OnEvent, Progress, ignore_event
from tlstudio.core.spec.text import counted

METHODS = ("tsne", "pca")
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
FLAG_COLOURS = {
    "mislabeled": (230, 0, 0), "outlier": (255, 170, 0), "duplicate": (160, 0, 200), "misclassified": (20, 20, 20),
}
FLAG_NAMES = {
    "mislabeled": "likely mislabelled", "outlier": "outlier", "duplicate": "near-duplicate",
    "misclassified": "wrong in the evaluation",
}


@dataclass(frozen=True)
class FeatureMap:
    """One point per image: ``points`` ``(images, 2)``, its path, label and split, and any health flags."""

    points: np.ndarray
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    splits: tuple[str, ...]
    flags: dict[str, str] = field(default_factory=dict)
    method: str = "tsne"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "points": [
                {"path": p, "x": float(x), "y": float(y), "class": self.classes[l], "split": s, "flag": self.flags.get(p)}
                for p, (x, y), l, s in zip(self.paths, self.points, self.labels, self.splits)
            ],
        }


def project(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """``(images, 2)`` coordinates scaled to [0, 1]: PCA to at most 50 dimensions, then t-SNE."""
    from sklearn.decomposition import PCA

    if method not in METHODS:
        raise UserError(f"The map method must be one of {', '.join(METHODS)}. Received: method={method!r}")
    x = np.asarray(features, dtype=np.float64)
    if len(x) < 2:
        raise DataError(f"A map needs at least 2 images. Received: {counted(len(x), 'image')}.")
    x = x - x.mean(axis=0)
    components = max(1, min(50, x.shape[1], len(x) - 1))
    reduced = PCA(n_components=components, random_state=seed).fit_transform(x)
    if reduced.shape[1] == 1:
        reduced = np.hstack([reduced, np.zeros_like(reduced)])
    if method == "tsne" and len(x) >= 5:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(x) - 1) / 3))
        points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
    else:
        points = reduced[:, :2]
    low, high = points.min(axis=0), points.max(axis=0)
    return (points - low) / np.where(high - low > 0, high - low, 1.0)


def mistake_flags(evaluation: Any) -> dict[str, str]:
    """``path → "misclassified"`` for every image an evaluation (:class:`~tlstudio.core.use.evaluation.Evaluation`)
    got wrong."""
    return {record.path: "misclassified" for record in evaluation.records if not record.correct}


def health_flags(report: Any) -> dict[str, str]:
    """Path -> ``mislabeled``, ``outlier`` or ``duplicate`` from a HealthReport (the first that applies)."""
    flags: dict[str, str] = {}
    for pair in report.near_duplicates:
        for path in pair.paths:
            flags[path] = "duplicate"
    for outlier in report.outliers:
        flags[outlier.path] = "outlier"
    for mistake in report.mislabeled:
        flags[mistake.path] = "mislabeled"
    return flags


def build_map(
    features: np.ndarray,
    items: Sequence[Any],
    splits: Sequence[str],
    classes: Sequence[str],
    method: str = "tsne",
    seed: int = 0,
    flags: dict[str, str] | None = None,
    on_event: OnEvent = ignore_event,
) -> FeatureMap:
    """The map of ``items`` (with ``path`` and ``label``) from their features."""
    on_event(Progress("map", 0, 1, f"Projecting {counted(len(items), 'image')} ({method})"))
    points = project(features, method, seed)
    on_event(Progress("map", 1, 1, "Map ready"))
    return FeatureMap(
        points,
        tuple(item.path for item in items),
        tuple(int(item.label) for item in items),
        tuple(classes),
        tuple(splits),
        dict(flags or {}),
        method,
    )


def render_png(
    feature_map: FeatureMap, path: str | os.PathLike[str], size: int = 1200, thumbnail: int = 40
) -> Path:
    """Draw the map (thumbnails framed in their class colour, flagged images ringed, a legend) to a PNG.

    Written to a temporary file beside ``path`` and renamed, so a failed
    render leaves no half-written picture. Thumbnails that cannot be read are
    drawn as dots.
    """
    from PIL import Image, ImageDraw

    if size < 200:
        raise UserError(f"The map must be at least 200 pixels wide. Received: size={size!r}")
    target = Path(path)
    rings = [name for name in FLAG_COLOURS if name != "misclassified" or name in feature_map.flags.values()]
    legend = 22 * (len(feature_map.classes) + len(rings)) + 20
    canvas = Image.new("RGB", (size, size + legend), "white")
    draw = ImageDraw.Draw(canvas)
    margin = thumbnail
    span = size - 2 * margin
    order = sorted(range(len(feature_map.paths)), key=lambda i: feature_map.paths[i] in feature_map.flags)
    for i in order:
        x, y = feature_map.points[i]
        cx, cy = int(margin + x * span), int(margin + (1 - y) * span)
        colour = PALETTE[feature_map.labels[i] % len(PALETTE)]
        half = thumbnail // 2
        box = (cx - half, cy - half, cx + half, cy + half)
        image = _thumbnail(feature_map.paths[i], thumbnail - 4)
        if image is None:
            draw.ellipse((cx - 5, cy - 5, cx + 5, cy + 5), fill=colour)
        else:
            draw.rectangle(box, fill=colour)
            canvas.paste(image, (cx - image.width // 2, cy - image.height // 2))
        flag = feature_map.flags.get(feature_map.paths[i])
        if flag:
            draw.ellipse((box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6), outline=FLAG_COLOURS[flag], width=4)
    y = size + 10
    for index, name in enumerate(feature_map.classes):
        draw.rectangle((10, y, 26, y + 16), fill=PALETTE[index % len(PALETTE)])
        draw.text((34, y + 2), name, fill="black")
        y += 22
    for name in rings:
        draw.ellipse((10, y, 26, y + 16), outline=FLAG_COLOURS[name], width=3)
        draw.text((34, y + 2), FLAG_NAMES[name], fill="black")
        y += 22
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        canvas.save(temporary, format="PNG")
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserError(
            f"Cannot write the map to {str(target)!r}: {error.strerror or error}. Choose a folder you can write to."
        ) from None
    return target


def _thumbnail(path: str, size: int) -> Any:
    from tlstudio.core.data.images import load_rgb
    from tlstudio.core.spec.errors import ImageError

    from PIL import Image

    try:
        pixels = load_rgb(path)
    except (ImageError, OSError, MemoryError):
        return None
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    image.thumbnail((size, size))
    return image
