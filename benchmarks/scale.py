"""How memory and time grow with the number of images, for a head-only run.

    python benchmarks/scale.py             # 10,000 and 60,000 images (long: generate, extract, train)
    python benchmarks/scale.py --quick     # 500 and 3,000 images at 32 px: a few minutes on 2 cores
    python benchmarks/scale.py --n 2000 20000

For each size, generated class folders of small JPEGs (28 px, like
Fashion-MNIST, three classes) are trained on in a fresh process: EfficientNet-
Lite0 (its weights ship offline) at ``--size`` px, head only, an empty feature
cache, through ``tlstudio.core.train.training.train``. That process reports
its own peak resident memory (the whole process, TensorFlow included) and its
wall time. The last lines are ``name: value``:

* ``peak_rss_mb_<n>`` — the peak memory of the run with ``n`` images
  (``_10k`` / ``_60k`` for the default sizes).
* ``rss_kb_per_image`` — the slope between the smallest and the largest run:
  what each more image costs in memory (a Lite0 feature is 1,280 floats, 5 KB).
* ``seconds_per_1k_images_<n>`` — wall time of the run per 1,000 images
  (flat when time grows linearly and start-up is small against the work).
* ``seconds_per_1k_images_slope`` — the slope between the smallest and the
  largest run: what each 1,000 more images cost in time, start-up (Python,
  TensorFlow, building the base) left out; at the ``--quick`` sizes start-up
  outweighs the work, so this is the figure to read there.
* ``extract_vs_forward`` — feature extraction from image files ÷ the raw
  forward pass over in-memory tensors, on a 960-image sample at the same size
  (as in ``benchmarks/speed.py``).

Everything is written to a temporary folder (also the cache, through
``TLSTUDIO_HOME``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = ("circles", "squares", "stripes")
IMAGE_PX = 28
EPOCHS = 3
BATCH_SIZE = 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 and 3,000 images at 32 px")
    parser.add_argument("--n", type=int, nargs="+", help="image counts to run (default 10000 60000)")
    parser.add_argument("--size", type=int, help="input size of the base in pixels (default 96, 32 with --quick)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = args.size or (32 if args.quick else 96)
    if args.child:
        return _child(Path(args.child), size)
    counts = sorted(args.n or ((500, 3000) if args.quick else (10_000, 60_000)))
    results: dict[str, float] = {}
    runs = {}
    with tempfile.TemporaryDirectory(prefix="tlstudio-scale-") as folder:
        work = Path(folder)
        for count in counts:
            root = _make_images(work / f"images-{count}", count)
            env = {**os.environ, "TLSTUDIO_HOME": str(work / f"home-{count}"), "TF_CPP_MIN_LOG_LEVEL": "2"}
            child = subprocess.run([sys.executable, __file__, "--child", str(root), "--size", str(size)],
                                   capture_output=True, text=True, env=env)
            runs[count] = _last_json(child)
            _log(f"{count} images: peak {runs[count]['peak_rss_mb']:.0f} MB, {runs[count]['seconds']:.1f} s")
            label = _label(count)
            results[f"peak_rss_mb_{label}"] = round(runs[count]["peak_rss_mb"], 1)
            results[f"seconds_per_1k_images_{label}"] = round(runs[count]["seconds"] * 1000 / count, 2)
        small, large = counts[0], counts[-1]
        if large > small:
            slope = (runs[large]["peak_rss_mb"] - runs[small]["peak_rss_mb"]) * 1024 / (large - small)
            results["rss_kb_per_image"] = round(slope, 2)
            seconds = (runs[large]["seconds"] - runs[small]["seconds"]) * 1000 / (large - small)
            results["seconds_per_1k_images_slope"] = round(seconds, 2)
        results["extract_vs_forward"] = _extract_vs_forward(work, size)
    print()
    for name, value in results.items():
        print(f"{name}: {value}")
    return 0


def _label(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _last_json(process: subprocess.CompletedProcess) -> dict:
    for line in reversed(process.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"The run printed no result (exit {process.returncode}):\n{process.stderr[-3000:]}")


def _make_images(root: Path, count: int, seed: int = 0) -> Path:
    """``root/<class>/*.jpg``: ``count`` generated 28 px images in three classes."""
    import numpy as np
    from PIL import Image

    from tlstudio.core.data.samples import sample_image

    rng = np.random.default_rng(seed)
    for n in range(count):
        index = n % len(CLASSES)
        folder = root / CLASSES[index]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample_image(index, rng, IMAGE_PX)).save(folder / f"{n:06d}.jpg", quality=90)
    return root


def _recipe(root: Path, size: int):
    from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec

    return Recipe(data=DataSpec(folders=(str(root),)), base=BaseSpec(name="efficientnet-lite0", input_size=size),
                  head=HeadSpec(), training=TrainSpec(epochs=EPOCHS, batch_size=BATCH_SIZE,
                                                      early_stopping_patience=0))


def _child(root: Path, size: int) -> int:
    """One head-only run in this fresh process; prints its wall time and peak memory as JSON."""
    started = time.perf_counter()
    from tlstudio.core.train import training

    result = training.train(_recipe(root, size), out_dir=root.parent / f"run-{root.name}")
    print(json.dumps({
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "val_accuracy": float(result.metrics.get("val_accuracy", float("nan"))),
    }), flush=True)
    return 0


def _extract_vs_forward(work: Path, size: int) -> float:
    """The same measure as ``benchmarks/speed.py``, on a 960-image sample through Lite0."""
    sys.path.insert(0, str(Path(__file__).parent))
    import speed

    from tlstudio.core.model import backbones
    from tlstudio.core.spec.recipe import BaseSpec

    os.environ["TLSTUDIO_HOME"] = str(work / "home-sample")
    root = _make_images(work / "sample", 960)
    base = backbones.build_base(BaseSpec(name="efficientnet-lite0", input_size=size))
    return speed._extract_vs_forward(root, base, size)


if __name__ == "__main__":
    sys.exit(main())
