"""How well the data health check and the recipe search do, on generated data with known faults.

    python benchmarks/health.py            # EfficientNet-Lite0 at 96 px, 5 classes x 40 images
    python benchmarks/health.py --quick    # 64 px, 5 classes x 24 images: a few minutes on 2 CPU cores

The base is EfficientNet-Lite0 with its shipped weights (nothing is
downloaded). The images are the generated samples of
``tlstudio.core.data.samples``; everything is written to a temporary folder
(also the feature cache, through ``TLSTUDIO_HOME``). The last lines are
``name: value``:

* ``label_noise_recovery`` — N images (5 %) are moved into a wrong class
  folder; the share of them found in the first 2N of ``check``'s list.
* ``near_duplicate_recall`` — on a second set of generated "scenes" (smooth
  random colour fields, every image different), M images get a copy beside
  them, shrunk to 90 % and saved as JPEG (quality 85); the share of those
  pairs ``check`` reports, and ``near_duplicate_pairs``, every pair it reports.
  (The shape samples are too alike for this: to the base, one noisy circle
  looks like any other.)
* ``tune_best_val_accuracy`` / ``default_val_accuracy`` — the search's best
  validation accuracy against the default recipe (no hidden layer, batch norm,
  lr 1e-3) trained for up to 27 epochs with early stopping, on the same split.
* ``tune_seconds_per_candidate`` — the mean seconds of one candidate's fit on
  a warm feature cache (the search's own time over its fits).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

CLASSES = ("circles", "squares", "stripes", "triangles", "rings")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller images and fewer of them")
    parser.add_argument("--budget", type=float, default=None, help="tune budget in seconds")
    args = parser.parse_args(argv)
    size, per_class = (64, 24) if args.quick else (96, 40)
    budget = args.budget or (60.0 if args.quick else 240.0)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["TLSTUDIO_HOME"] = str(Path(scratch) / "home")
        results = _run(Path(scratch) / "images", size, per_class, budget)
    for name, value in results.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    print(json.dumps(results))
    return results


def _run(root: Path, size: int, per_class: int, budget: float) -> dict[str, float]:
    from tlstudio.core.data.dataset import scan_dataset
    from tlstudio.core.data.samples import make_sample_folders
    from tlstudio.core.model import backbones
    from tlstudio.core.spec.recipe import BaseSpec, Recipe
    from tlstudio.core.use import health, tune

    make_sample_folders(root, CLASSES, per_class=per_class, seed=3)
    rng = random.Random(0)
    files = sorted(root.rglob("*.png"))
    noisy = max(1, len(files) // 20)
    moved = []
    for path in rng.sample(files, noisy):
        target_class = rng.choice([c for c in CLASSES if c != path.parent.name])
        target = root / target_class / f"moved_{path.name}"
        shutil.move(path, target)
        moved.append(str(target))
    spec = BaseSpec(name="efficientnet-lite0", input_size=size)
    base = backbones.build_base(spec)
    dataset = scan_dataset([root])
    started = time.perf_counter()
    report = health.check_dataset(base, dataset, None, size, backbones.preprocessing_mode(spec),
                                  base_label=spec.name)
    check_seconds = time.perf_counter() - started
    top = {m.path for m in report.mislabeled[: 2 * len(moved)]}
    scenes, copies = _scenes(root.parent / "scenes", per_class, rng)
    scene_report = health.check_dataset(base, scan_dataset([scenes]), None, size,
                                        backbones.preprocessing_mode(spec), base_label=spec.name)
    pairs = {frozenset(d.paths) for d in scene_report.near_duplicates}

    recipe = Recipe(base=spec)
    result = tune.tune_recipe(recipe, base, dataset, budget_s=budget, candidates=9, base_label=spec.name)
    default = _default_accuracy(recipe, base, dataset, size)
    fits = [t.seconds for t in result.leaderboard]
    return {
        "images": len(dataset.train) + len(dataset.val),
        "label_noise_recovery": sum(path in top for path in moved) / len(moved),
        "near_duplicate_recall": sum(frozenset(pair) in pairs for pair in copies) / len(copies),
        "near_duplicate_pairs": len(pairs),
        "check_seconds": check_seconds,
        "tune_best_val_accuracy": result.best.val_accuracy if result.best else float("nan"),
        "default_val_accuracy": default,
        "tune_candidates": len(result.leaderboard),
        "tune_seconds_per_candidate": sum(fits) / len(fits) if fits else float("nan"),
    }


def _scenes(root: Path, per_class: int, rng: random.Random) -> tuple[Path, list[tuple[str, str]]]:
    """Class folders of smooth random colour fields (a tint per class) and shrunk JPEG copies of a few."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(5)
    for index, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        tint = generator.integers(0, 256, 3)
        for n in range(per_class):
            grid = (generator.integers(0, 256, (4, 4, 3)) * 0.6 + tint * 0.4).astype("uint8")
            Image.fromarray(grid).resize((96, 96), Image.Resampling.BICUBIC).save(folder / f"{name}_{n:03d}.png")
    copies = []
    for path in rng.sample(sorted(root.rglob("*.png")), max(1, len(CLASSES) * per_class // 20)):
        with Image.open(path) as image:
            copy = path.with_name(f"copy_{path.stem}.jpg")
            image.resize((86, 86)).convert("RGB").save(copy, quality=85)
        copies.append((str(path), str(copy)))
    return root, copies


def _default_accuracy(recipe, base, dataset, size: int) -> float:
    import numpy as np

    from tlstudio.core.model.backbones import preprocessing_mode
    from tlstudio.core.use import tune
    from tlstudio.core.use.cut_comparison import extract_features
    from tlstudio.core.model.tensors import default_cut_tensor

    cut = default_cut_tensor(base)
    items = [*dataset.train, *dataset.val]
    features = extract_features(base, items, [cut], size, preprocessing_mode(recipe.base), base_label=recipe.base.name)
    labels = np.asarray([i.label for i in items])
    start = tune.Candidate(cut, (), 0.0, True, 1e-3)
    trial = tune.fit_candidate(start, features[cut], labels, np.arange(len(dataset.train)),
                               np.arange(len(dataset.train), len(items)), len(dataset.classes), tune.MAX_EPOCHS)
    return trial.val_accuracy


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
