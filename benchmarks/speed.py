"""TL Studio against plain Keras, on the same data and machine, in one run.

    python benchmarks/speed.py            # VGG16, random weights, 96 px, 900 images
    python benchmarks/speed.py --quick    # 64 px, 450 images: a few minutes on 2 CPU cores

The base is VGG16 with random weights (nothing is downloaded) cut at its default
tensor, ``block5_pool:0``; the images are generated JPEGs in ``train/`` and
``val/`` class folders. Everything is written to a temporary folder (also the
feature cache, through ``TLSTUDIO_HOME``). The last lines are ``name: value``:

* ``extract_vs_forward`` — TL Studio's feature extraction from the image files
  (decoding, resizing, the frozen base and pooling) in images per second,
  divided by the raw forward pass of the same frozen part over images already
  in memory as tensors. Both are warmed up once, then the best of three passes counts
  (the machine may be shared).
* ``head_speedup_cold`` — 10 head-only epochs in the Keras transfer-learning
  guide's loop (``image_dataset_from_directory`` → frozen base → ``fit``)
  divided by ``tlstudio.core.train.training.train`` with an empty feature cache, the
  same head (global average pooling, dense softmax), optimizer and batch size;
  both timings include reading the folders, and TL Studio's includes writing
  its run folder.
* ``head_speedup_warm`` — the same, with the cache filled by an earlier run
  with another head (the median of three such runs).
* ``warm_path_s`` — in those warm runs, the seconds from the feature cache's
  last read (its ``Feature cache:`` message) to the head phase's start (its
  ``PhaseStarted`` event, right before the first epoch), the median of three.
* ``head_val_accuracy_keras`` / ``_tlstudio_cold`` / ``_tlstudio_warm`` — the
  validation accuracies behind the speed-ups (they should agree within 2 points).
* ``finetune_vs_raw`` — TL Studio's fine-tuning phase (the last 4 weighted
  base layers and the head trainable) in images per second from the files,
  through its pipeline and training loop, timed from the ``BatchEnded`` events
  of the last of 2 fine-tune epochs, divided by a plain ``tf.GradientTape``
  step in a ``tf.function`` on the same classifier with the same trainable
  layers over batches already in memory (best of three passes).
* ``gui_stall_p99_ms`` / ``gui_stall_max_ms`` — how late a 10 ms QTimer on the
  main thread of an offscreen TL Studio window fires while the Train page
  trains a tiny model (head and fine-tuning) through its real worker.
* ``gui_stall_p99_ms_evaluation`` / ``_grad_cam`` / ``_cut_comparison`` (and
  ``gui_stall_max_ms_…``) — the same while the Evaluate page evaluates that run
  (every validation image predicted), while its Explain tab computes Grad-CAM
  for one image (loading the run's model first), and while the cut comparison
  dialog compares the base's default cut tensors, each from its start until
  its result is shown; the probe fails if one does not finish.
* ``gui_stall_p99_ms_export`` / ``gui_stall_max_ms_export`` — the same while the
  Export page exports that run in every format (TFLite float, fp16 and int8
  conversion, the round-trip checks and the cost measurement included), from
  pressing Export until its result is shown; the probe fails if the export does not finish.
* ``gui_stall_p99_ms_base_model`` / ``gui_stall_max_ms_base_model`` — the same
  while the Model page replaces a loaded VGG16 (random weights, 224 px) by EfficientNet-Lite0
  (built in the app, which must hold the model: a worker thread, not a
  process), from "Load base model" until 2 s after it is built.
* ``launch_to_paint_s`` — ``python -m tlstudio`` (offscreen) from process
  start to the first frame with the window's content, read back from the
  screen (``QScreen.grabWindow`` every 30 ms; a blank or one-colour window
  does not count, and a window that never shows content fails the run).
  The median of three launches.
* ``launch_stall_p99_ms`` / ``launch_stall_max_ms`` — how late a 10 ms timer
  on the main thread fires from that first frame until TensorFlow is ready
  (the pages and TensorFlow load meanwhile); the worst of three launches.
* ``tf_import_s`` — a whole ``python -c "import tensorflow, keras"`` process.
* ``cli_warm_overhead_s`` — a whole ``tlstudio train`` process on a warm
  feature cache (EfficientNet-Lite0) minus the same recipe's ``train`` in
  this process: start-up, TensorFlow's import, building the base, reading
  the cache. ``cli_cpp_log_lines`` counts TensorFlow C++ lines it printed
  (should be 0).
* ``cluster_extracted_per_worker`` / ``cluster_images`` — two ``tlstudio
  train`` workers on 127.0.0.1 (``TF_CONFIG``, a cold feature cache each)
  train the same head-only EfficientNet-Lite0 recipe; the most images either
  worker extracted, read from its log, next to the images of the run (goal:
  half of them, each worker extracting its share). ``cluster_seconds`` is the
  wall time of the two workers together, next to ``cli_cold_s``, one process
  doing the same on a cold cache.
* ``peak_rss_mb`` — this process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD_EPOCHS = 10
FINE_TUNE_EPOCHS = 2
BATCH_SIZE = 32
LEARNING_RATE = 1e-2
CLASSES = ("circles", "squares", "stripes")
PROBE_INTERVAL_MS = 10
PROBE_SETTLE_MS = 500
PROBE_TAIL_MS = 2000
MIN_PAINTED_COLOURS = 16
GUI_ACTIONS = ("evaluation", "grad_cam", "cut_comparison", "export", "base_model")
"""What the GUI probe measures after training, in order, each from its button until its result is shown."""
PROBE_TIMEOUT_S = int(os.environ.get("TLSTUDIO_BENCH_PROBE_TIMEOUT_S", "300"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 px and 450 images: a few minutes on 2 cores")
    parser.add_argument("--images", type=int, help="images in all (default 900, 450 with --quick)")
    parser.add_argument("--size", type=int, help="input size in pixels (default 96, 64 with --quick)")
    parser.add_argument("--no-gui", action="store_true", help="skip the GUI measurements (no Qt needed)")
    parser.add_argument("--gui-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--launch-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gui_probe:
        return _gui_probe()
    if args.launch_probe:
        return _launch_probe()
    images = args.images or (450 if args.quick else 900)
    size = args.size or (64 if args.quick else 96)
    with tempfile.TemporaryDirectory(prefix="tlstudio-bench-") as folder:
        work = Path(folder)
        os.environ["TLSTUDIO_HOME"] = str(work / "home")
        os.environ["KERAS_HOME"] = str(work / "keras")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        results = _engine_benchmarks(work, images, size)
        results.update(_command_benchmarks(work, size))
        results.update(_cluster_benchmarks(work, size))
        if not args.no_gui:
            results.update(_gui_benchmarks(work))
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print()
    for name, value in results.items():
        print(f"{name}: {value}")
    return 0


# ------------------------------------------------------------------ data


def _make_images(root: Path, count: int, seed: int = 0) -> Path:
    """``root/train|val/<class>/*.jpg``: generated 1.5x the input size, 20% held out for validation."""
    import numpy as np
    from PIL import Image

    from tlstudio.core.data.samples import sample_image

    rng = np.random.default_rng(seed)
    per_class = count // len(CLASSES)
    for index, name in enumerate(CLASSES):
        for n in range(per_class):
            split = "val" if n % 5 == 0 else "train"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample_image(index, rng, 128)).save(folder / f"{name}_{n:04d}.jpg", quality=90)
    return root


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ engine


def _engine_benchmarks(work: Path, count: int, size: int) -> dict[str, float]:
    import keras

    from tlstudio.core.spec.recipe import BaseSpec

    root = _make_images(work / "images", count)
    spec = BaseSpec(name="vgg16", weights="none", input_size=size)
    keras.utils.set_random_seed(0)
    from tlstudio.core.model import backbones

    base = backbones.build_base(spec)
    _log(f"VGG16 (random weights) at {size}x{size}, {count} generated images in {root}")
    results: dict[str, float] = {}
    results["extract_vs_forward"] = _extract_vs_forward(root, base, size)
    keras_seconds, keras_accuracy = _keras_guide_loop(root, base, size)
    cold_seconds, cold_accuracy, warm_seconds, warm_accuracy, warm_path = _tlstudio_runs(work, root, base, spec)
    results["head_speedup_cold"] = round(keras_seconds / cold_seconds, 2)
    results["head_speedup_warm"] = round(keras_seconds / warm_seconds, 2)
    results["head_seconds_keras"] = round(keras_seconds, 2)
    results["head_seconds_tlstudio_cold"] = round(cold_seconds, 2)
    results["head_seconds_tlstudio_warm"] = round(warm_seconds, 2)
    results["head_val_accuracy_keras"] = round(keras_accuracy, 4)
    results["head_val_accuracy_tlstudio_cold"] = round(cold_accuracy, 4)
    results["head_val_accuracy_tlstudio_warm"] = round(warm_accuracy, 4)
    results["warm_path_s"] = round(warm_path, 3)
    results["finetune_vs_raw"] = _finetune_vs_raw(work, root, spec)
    return results


def _frozen_part(base, size: int):
    from tlstudio.core.model import classifier, tensors
    from tlstudio.core.train import batch_norm
    from tlstudio.core.spec.recipe import HeadSpec

    model = classifier.build_classifier(base, tensors.default_cut_tensor(base), len(CLASSES),
                                        HeadSpec(batch_norm=False), "caffe")
    return batch_norm.split_head(model)[0]


def _extract_vs_forward(root: Path, base, size: int) -> float:
    """Images per second: extraction from files ÷ the forward pass over in-memory tensors."""
    import numpy as np
    import tensorflow as tf

    from tlstudio.core.data import pipeline
    from tlstudio.core.train import extraction
    from tlstudio.core.data.dataset import scan_dataset

    items = list(scan_dataset([root]).train)
    frozen = _frozen_part(base, size)
    quiet = (lambda event: None, lambda: False)

    def extract() -> np.ndarray:
        return extraction.extract(frozen, items, size, BATCH_SIZE, *quiet, "benchmark")

    images = pipeline.load_images([item.path for item in items], size)
    batches = [tf.constant(images[i : i + BATCH_SIZE]) for i in range(0, len(images), BATCH_SIZE)]
    forward = tf.function(lambda x: frozen(x, training=False))

    def raw() -> None:
        for batch in batches:
            forward(batch).numpy()

    extract()
    raw()
    rates = {}
    for name, run in (("extract", extract), ("forward", raw)) * 3:
        started = time.perf_counter()
        run()
        rate = len(items) / (time.perf_counter() - started)
        rates[name] = max(rates.get(name, 0.0), rate)
    _log(f"extraction from files {rates['extract']:.1f} images/s, raw forward {rates['forward']:.1f} images/s")
    return round(rates["extract"] / rates["forward"], 3)


def _keras_guide_loop(root: Path, base, size: int) -> tuple[float, float]:
    """The Keras transfer-learning guide: image_dataset_from_directory → frozen base → fit; (seconds, val accuracy)."""
    import keras
    import tensorflow as tf

    from tlstudio.core.model.preprocess import Preprocess

    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    train_ds = keras.utils.image_dataset_from_directory(
        root / "train", image_size=(size, size), batch_size=BATCH_SIZE, seed=0, verbose=False
    ).prefetch(tf.data.AUTOTUNE)
    val_ds = keras.utils.image_dataset_from_directory(
        root / "val", image_size=(size, size), batch_size=BATCH_SIZE, shuffle=False, verbose=False
    ).prefetch(tf.data.AUTOTUNE)
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = Preprocess("caffe")(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train_ds, validation_data=val_ds, epochs=HEAD_EPOCHS, verbose=0)
    seconds = time.perf_counter() - started
    accuracy = float(history.history["val_accuracy"][-1])
    _log(f"Keras guide loop: {HEAD_EPOCHS} epochs in {seconds:.1f} s, validation accuracy {accuracy:.4f}")
    return seconds, accuracy


def _tlstudio_runs(work: Path, root: Path, base, spec) -> tuple[float, float, float, float, float]:
    """TL Studio's train(): empty cache; then cache filled by another head; (seconds, accuracy) for each,
    and the warm runs' median seconds from the feature cache's last read to the head phase's start."""
    from tlstudio.core.data import feature_cache
    from tlstudio.core.spec.events import Message, PhaseStarted
    from tlstudio.core.train import training
    from tlstudio.core.spec.recipe import DataSpec, HeadSpec, Recipe, TrainSpec

    def recipe(head: HeadSpec) -> Recipe:
        return Recipe(
            data=DataSpec(folders=(str(root),)),
            base=spec,
            head=head,
            training=TrainSpec(epochs=HEAD_EPOCHS, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
                               early_stopping_patience=0),
        )

    head = HeadSpec(batch_norm=False)
    other_head = HeadSpec(hidden_units=(64,), dropout=0.3)

    def timed(name: str, chosen: HeadSpec) -> tuple[float, float, float]:
        moments: dict[str, float] = {}

        def note(event) -> None:
            if isinstance(event, Message) and event.text.startswith("Feature cache:"):
                moments["cache_read"] = time.perf_counter()
            elif isinstance(event, PhaseStarted):
                moments.setdefault("phase", time.perf_counter())

        started = time.perf_counter()
        result = training.train(recipe(chosen), base_model=base, out_dir=work / "runs" / name, on_event=note)
        seconds = time.perf_counter() - started
        accuracy = float(result.metrics["val_accuracy"])
        path = moments["phase"] - moments["cache_read"]
        _log(f"TL Studio {name}: {HEAD_EPOCHS} epochs in {seconds:.2f} s, validation accuracy {accuracy:.4f}; "
             f"{path:.2f} s from the cache's last read to the first epoch")
        return seconds, accuracy, path

    feature_cache.clear()
    cold = timed("cold", head)
    feature_cache.clear()
    timed("fill-with-another-head", other_head)
    warm_runs = [timed(f"warm-{n}", head) for n in range(1, 4)]
    warm = sorted(warm_runs)[1]
    path = sorted(run[2] for run in warm_runs)[1]
    return cold[0], cold[1], warm[0], warm[1], path


def _finetune_vs_raw(work: Path, root: Path, spec) -> float:
    """Images per second: TL Studio's fine-tuning phase from files ÷ a plain GradientTape step in memory.

    TL Studio: ``train`` with one head epoch and ``FINE_TUNE_EPOCHS`` fine-tune
    epochs (default recipe: the last 4 weighted base layers unfrozen), timed
    from its ``BatchEnded`` events between the full batches of the last
    fine-tune epoch (the first epoch decodes the files and traces the step;
    validation passes fall outside). Raw: the same classifier with the same
    layers trainable, the same loss and optimizer, in a ``tf.function`` over
    batches already in memory as tensors; warmed up once, best of three passes.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from tlstudio.core.model import backbones, classifier, tensors
    from tlstudio.core.data import pipeline
    from tlstudio.core.train import training
    from tlstudio.core.data.dataset import scan_dataset
    from tlstudio.core.spec.events import BatchEnded
    from tlstudio.core.spec.recipe import DataSpec, HeadSpec, Recipe, TrainSpec

    keras.utils.set_random_seed(0)
    base = backbones.build_base(spec)
    train_spec = TrainSpec(epochs=1, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
                           fine_tune_epochs=FINE_TUNE_EPOCHS, early_stopping_patience=0)
    recipe = Recipe(data=DataSpec(folders=(str(root),)), base=spec, head=HeadSpec(batch_norm=False),
                    training=train_spec)
    stamps: list[tuple[int, int, float]] = []

    def on_event(event) -> None:
        if isinstance(event, BatchEnded) and event.phase == training.FINE_TUNE_PHASE:
            stamps.append((event.epoch, event.batch, time.perf_counter()))

    training.train(recipe, base_model=base, on_event=on_event, out_dir=work / "runs" / "fine-tune")
    items = list(scan_dataset([root]).train)
    full = len(items) // BATCH_SIZE
    last = [(batch, t) for epoch, batch, t in stamps if epoch == FINE_TUNE_EPOCHS and batch < full]
    tlstudio_rate = (len(last) - 1) * BATCH_SIZE / (last[-1][1] - last[0][1])

    model = classifier.build_classifier(backbones.build_base(spec), tensors.default_cut_tensor(base), len(CLASSES),
                                        HeadSpec(batch_norm=False), "caffe")
    classifier.unfreeze_for_fine_tuning(model, train_spec.fine_tune_layers, train_spec.fine_tune_from)
    variables = list(model.trainable_variables)
    optimizer = keras.optimizers.Adam(LEARNING_RATE * train_spec.fine_tune_lr_factor)
    optimizer.build(variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    images = pipeline.load_images([item.path for item in items], spec.input_size)
    labels = np.asarray([item.label for item in items], dtype=np.int32)
    batches = [(tf.constant(images[i : i + BATCH_SIZE]), tf.constant(labels[i : i + BATCH_SIZE]))
               for i in range(0, full * BATCH_SIZE, BATCH_SIZE)]

    def raw() -> None:
        for x, y in batches:
            step(x, y).numpy()

    raw()
    raw_rate = 0.0
    for _ in range(3):
        started = time.perf_counter()
        raw()
        raw_rate = max(raw_rate, full * BATCH_SIZE / (time.perf_counter() - started))
    _log(f"fine-tuning: TL Studio {tlstudio_rate:.1f} images/s from files, raw GradientTape step "
         f"{raw_rate:.1f} images/s in memory")
    return round(tlstudio_rate / raw_rate, 3)


# ------------------------------------------------------------------ whole commands


def _command_benchmarks(work: Path, size: int) -> dict[str, float]:
    """``tf_import_s`` and ``cli_warm_overhead_s``: whole processes, start-up included.

    ``tlstudio train`` (EfficientNet-Lite0, whose weights ship offline, so every
    process builds the same base and hits the same cache) runs once to fill the
    feature cache, then again on the warm cache; its wall time minus the same
    recipe's ``train`` in this process (warm cache, TensorFlow loaded) is what
    the command costs beyond training the head.
    """
    from tlstudio.core.data import feature_cache
    from tlstudio.core.model import backbones
    from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec
    from tlstudio.core.train import training

    root = work / "images"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow, keras"], env=env, check=True, capture_output=True)
    tf_import = time.perf_counter() - started
    command = [sys.executable, "-m", "tlstudio", "train", "--data", str(root), "--base", "efficientnet-lite0",
               "--input-size", str(size), "--epochs", str(HEAD_EPOCHS), "--batch-size", str(BATCH_SIZE),
               "--lr", str(LEARNING_RATE), "--patience", "0", "--quiet"]
    feature_cache.clear()
    started = time.perf_counter()
    subprocess.run([*command, "--out", str(work / "cli-cold")], env=env, check=True, capture_output=True)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    warm = subprocess.run([*command, "--out", str(work / "cli-warm")], env=env, check=True, capture_output=True,
                          text=True)
    whole = time.perf_counter() - started
    recipe = Recipe(data=DataSpec(folders=(str(root),)), base=BaseSpec(name="efficientnet-lite0", input_size=size),
                    head=HeadSpec(), training=TrainSpec(epochs=HEAD_EPOCHS, batch_size=BATCH_SIZE,
                                                        learning_rate=LEARNING_RATE, early_stopping_patience=0))
    base = backbones.build_base(recipe.base)
    head_times = []
    for n in range(3):
        started = time.perf_counter()
        training.train(recipe, base_model=base, out_dir=work / "runs" / f"cli-in-process-{n}")
        head_times.append(time.perf_counter() - started)
    head = sorted(head_times)[1]
    noise = [line for line in warm.stderr.splitlines() if "I0000" in line or "cuInit" in line or "oneDNN" in line]
    _log(f"tlstudio train on a warm cache: {whole:.2f} s in all, {head:.2f} s training in process; "
         f"TensorFlow import {tf_import:.2f} s; C++ log lines shown: {len(noise)}")
    return {
        "tf_import_s": round(tf_import, 2),
        "cli_warm_overhead_s": round(whole - head, 2),
        "cli_cpp_log_lines": len(noise),
        "cli_cold_s": round(cold, 2),
    }


def _cluster_benchmarks(work: Path, size: int) -> dict[str, float]:
    """Two loopback workers train the ``tlstudio train`` recipe of :func:`_command_benchmarks` on cold caches."""
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    addresses = [f"127.0.0.1:{port}" for port in ports]
    command = [sys.executable, "-m", "tlstudio", "train", "--data", str(work / "images"), "--base",
               "efficientnet-lite0", "--input-size", str(size), "--epochs", str(HEAD_EPOCHS), "--batch-size",
               str(BATCH_SIZE // 2), "--lr", str(LEARNING_RATE), "--patience", "0"]
    workers = []
    started = time.perf_counter()
    for index in range(2):
        env = {**os.environ, "TLSTUDIO_HOME": str(work / f"cluster-{index}"),
               "TF_CONFIG": json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True))
    logs = [worker.communicate(timeout=PROBE_TIMEOUT_S)[1] for worker in workers]
    seconds = time.perf_counter() - started
    extracted, images = [], 0
    for worker, log in zip(workers, logs):
        cache = re.search(r"([\d,]+) images? read from the cache, ([\d,]+) extracted", log)
        share = re.search(r"its share of the images, [\d,]+ of ([\d,]+);", log)
        if worker.returncode != 0 or cache is None or share is None:
            raise RuntimeError(f"A cluster worker failed (exit {worker.returncode}):\n{log[-3000:]}")
        extracted.append(int(cache[2].replace(",", "")))
        images = int(share[1].replace(",", ""))
    _log(f"cluster of 2 workers: extracted {extracted} of {images} images, {seconds:.1f} s")
    return {"cluster_extracted_per_worker": max(extracted), "cluster_images": images,
            "cluster_seconds": round(seconds, 2)}


# ------------------------------------------------------------------ GUI


def _gui_benchmarks(work: Path) -> dict[str, float]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TLSTUDIO_HOME": str(work / "gui-home")}
    probe = subprocess.run([sys.executable, __file__, "--gui-probe"], capture_output=True, text=True, env=env,
                           timeout=900)
    stalls = _last_json(probe, "GUI probe")
    for action in GUI_ACTIONS:
        if not stalls[action]["finished"]:
            raise RuntimeError(f"The GUI probe's {action.replace('_', ' ')} did not finish:\n{probe.stderr[-3000:]}")
    _log(f"GUI stalls (worst ms at s): training {stalls['worst_ms_at_s'][:3]}, " + ", ".join(
        f"{action.replace('_', ' ')} {stalls[action]['worst_ms_at_s'][:3]}" for action in GUI_ACTIONS))
    launches = []
    for _ in range(3):
        started = time.time()
        launch = subprocess.run([sys.executable, __file__, "--launch-probe"], capture_output=True, text=True,
                                env=env, timeout=PROBE_TIMEOUT_S + 60)
        measured = _last_json(launch, "launch probe")
        if not measured.get("painted_at"):
            raise RuntimeError("The launch probe never saw the window's content on the screen (blank window).")
        launches.append({**measured, "paint_s": measured["painted_at"] - started})
    _log("launch to paint: " + ", ".join(f"{m['paint_s']:.2f} s (worst stalls {m['worst_ms_at_s'][:3]})"
                                         for m in launches))
    median = sorted(launches, key=lambda m: m["paint_s"])[1]
    return {
        "gui_stall_p99_ms": stalls["p99_ms"],
        "gui_stall_max_ms": stalls["max_ms"],
        **{f"gui_stall_{measure}_ms_{action}": stalls[action][f"{measure}_ms"]
           for action in GUI_ACTIONS for measure in ("p99", "max")},
        "launch_to_paint_s": round(median["paint_s"], 2),
        "launch_stall_p99_ms": max(m["stall_p99_ms"] for m in launches),
        "launch_stall_max_ms": max(m["stall_max_ms"] for m in launches),
    }


def _last_json(process: subprocess.CompletedProcess, what: str) -> dict:
    for line in reversed(process.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"The {what} printed no result (exit {process.returncode}):\n{process.stderr[-3000:]}")


def _gui_probe() -> int:
    """In an offscreen main window, train a tiny model from the Train page, evaluate it, compute Grad-CAM,
    compare cut tensors, export it and swap the base model, while a 10 ms timer measures lateness."""
    from PySide6.QtCore import QSettings

    from tlstudio.core.data.dataset import scan_dataset
    from tlstudio.core.data.samples import make_sample_folders, make_tiny_vgg
    from tlstudio.gui import errors, main_window
    from tlstudio.gui.app import create_application

    # An error dialog is modal and would wait for a click forever offscreen: report errors on stderr instead.
    main_window.show_error = lambda parent, error: print(f"error shown: {error!r}", file=sys.stderr, flush=True)
    errors.ErrorDialog.exec = lambda dialog: print(f"error shown: {dialog.text()}", file=sys.stderr, flush=True) or 0
    app = create_application()
    home = Path(os.environ["TLSTUDIO_HOME"])
    window = main_window.MainWindow(settings=QSettings(str(home / "settings.ini"), QSettings.Format.IniFormat))
    window.show()
    app.processEvents()  # the window's first paint before the project is set up
    state = window.state
    folder = make_sample_folders(home / "images", per_class=30, size=48)
    state.update("data", folders=(str(folder),))
    state.update("base", input_size=32)
    state.update("training", epochs=6, batch_size=4, fine_tune_epochs=2, early_stopping_patience=0)
    state.set_dataset(scan_dataset([folder]))
    state.set_base_model(make_tiny_vgg())
    state.set_tensorflow_ready(True)
    page = window.pages["Train"]
    window.stack.setCurrentWidget(page)
    # Let the window handle what setting up the project queued (pages showing the data set and
    # the base model, the first paint of the Train page) before measuring: the probe measures
    # pressing Start and training, as a user does with the page already on screen.
    _settle()

    training = _stall_probe(page.start, page.finished)
    training["finished"] = page.result is not None

    # Evaluate that run (predicting every validation image), then Grad-CAM one image (loading the run's model
    # first), then compare cut tensors of the base, each as a user starts it.
    evaluate_page = window.pages["Evaluate"]
    window.stack.setCurrentWidget(evaluate_page)
    _settle()
    evaluation = _stall_probe(lambda: evaluate_page.evaluate(page.result.run_dir, reuse=False),
                              evaluate_page.evaluated)
    evaluation["finished"] = evaluate_page.evaluation is not None
    panel = evaluate_page.explain_panel
    _settle()
    grad_cam = _stall_probe(lambda: evaluate_page.explain(state.dataset.val[0].path), panel.explained)
    grad_cam["finished"] = panel.explanation is not None
    from tlstudio.gui.cut_comparison_dialog import CutComparisonDialog

    model_page = window.pages["Model"]
    window.stack.setCurrentWidget(model_page)
    dialog = CutComparisonDialog(state, window)
    dialog.show()
    _settle()
    cut_comparison = _stall_probe(dialog.start, dialog.compared)
    cut_comparison["finished"] = bool(dialog.results)
    dialog.close()

    # Export the run just trained in every format, its round-trip checks and cost measurement included.
    export_page = window.pages["Export"]
    window.stack.setCurrentWidget(export_page)
    export_page.destination_edit.setText(str(home / "export"))
    for box in export_page.format_boxes.values():
        box.setChecked(True)
    export_page.measure_box.setChecked(True)
    _settle()
    export = _stall_probe(export_page.start_export, export_page.export_finished)
    export["finished"] = export_page.report is not None

    # Replace the base model by EfficientNet-Lite0 (weights ship offline) from the Model page, then let the
    # page show the new network for a while (its drawing is part of what the user waits for).
    # The issue this measures: a loaded VGG16 replaced by Lite0 (random VGG weights: nothing is downloaded).
    from tlstudio.core.model.backbones import build_base
    from tlstudio.core.spec.recipe import BaseSpec

    window.stack.setCurrentWidget(model_page)
    vgg = BaseSpec(name="vgg16", weights="none", input_size=224)
    state.set_recipe(state.recipe.replace(base=vgg, cut_tensor=None))
    state.set_base_model(build_base(vgg))
    del vgg
    base_panel = model_page.base_panel
    base_panel.choose_base("efficientnet-lite0", False)
    _settle()
    base_model = _stall_probe(base_panel.load_base_model, base_panel.base_built, tail_ms=PROBE_TAIL_MS)
    base_model["finished"] = state.base_model is not None and "efficientnet" in state.recipe.base.name
    print(json.dumps({**training, "evaluation": evaluation, "grad_cam": grad_cam, "cut_comparison": cut_comparison,
                      "export": export, "base_model": base_model}))
    sys.stdout.flush()
    os._exit(0)


def _settle() -> None:
    """Let the window handle what the last step queued (a page showing, its first paint) before measuring."""
    from PySide6.QtCore import QEventLoop, QTimer

    settle = QEventLoop()
    QTimer.singleShot(PROBE_SETTLE_MS, settle.quit)
    settle.exec()


def _stall_probe(start, finished_signal, tail_ms: int = 0) -> dict:
    """Call ``start`` from the event loop and measure how late a 10 ms timer fires until ``finished_signal``
    (and ``tail_ms`` after it)."""
    import numpy as np
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

    clock = QElapsedTimer()
    ticks: list[int] = []
    probe = QTimer()
    probe.setTimerType(probe.timerType().PreciseTimer)
    probe.setInterval(PROBE_INTERVAL_MS)
    probe.timeout.connect(lambda: ticks.append(clock.nsecsElapsed()))
    loop = QEventLoop()
    finished_signal.connect(lambda _result: QTimer.singleShot(tail_ms, loop.quit))
    clock.start()
    probe.start()
    QTimer.singleShot(0, start)
    QTimer.singleShot(PROBE_TIMEOUT_S * 1000, loop.quit)
    loop.exec()
    probe.stop()
    times = np.asarray(ticks, dtype=np.float64) / 1e6
    stalls = np.maximum(np.diff(times) - PROBE_INTERVAL_MS, 0.0)
    worst = np.argsort(stalls)[::-1][:5]
    return {
        "p99_ms": round(float(np.percentile(stalls, 99)), 1),
        "max_ms": round(float(stalls.max()), 1),
        "ticks": len(ticks),
        "seconds": round(clock.elapsed() / 1000, 1),
        "worst_ms_at_s": [[round(float(stalls[i]), 1), round(float(times[i]) / 1000, 2)] for i in worst],
    }


def _launch_probe() -> int:
    """``tlstudio.gui.app.main`` as ``python -m tlstudio`` runs it, watching the window's pixels.

    From ``show()`` on, a 30 ms timer reads the window back from the screen
    (:func:`_window_has_content`) until it shows the window's content; a 10 ms
    timer measures how late the main thread answers from that first frame
    until TensorFlow is ready. Prints one JSON line and exits.
    """
    import numpy as np
    from PySide6.QtCore import QTimer

    from tlstudio.gui import app, main_window

    original_show = main_window.MainWindow.show
    ticks: list[float] = []
    painted: list[float] = []

    def show_and_watch(window) -> None:
        original_show(window)
        probe = QTimer(window)
        probe.setTimerType(probe.timerType().PreciseTimer)
        probe.setInterval(PROBE_INTERVAL_MS)
        probe.timeout.connect(lambda: ticks.append(time.time()))
        grabber = QTimer(window)
        grabber.setInterval(30)

        def grab() -> None:
            if _window_has_content(window):
                painted.append(time.time())
                ticks.append(painted[0])
                grabber.stop()
                probe.start()
                if window.state.tensorflow_ready:
                    report()

        def report() -> None:
            times = np.asarray(ticks, dtype=np.float64) * 1000
            stalls = np.maximum(np.diff(times) - PROBE_INTERVAL_MS, 0.0) if len(times) > 1 else np.zeros(1)
            print(json.dumps({
                "painted_at": painted[0],
                "ready_at": time.time(),
                "stall_p99_ms": round(float(np.percentile(stalls, 99)), 1),
                "stall_max_ms": round(float(stalls.max()), 1),
                "ticks": len(ticks),
                "worst_ms_at_s": sorted(((round(float(s), 1), round(float(t) / 1000 - painted[0], 2))
                                         for s, t in zip(stalls, times[1:])), reverse=True)[:5],
            }), flush=True)
            os._exit(0)

        def ready(is_ready: bool) -> None:
            if is_ready and painted:
                report()

        grabber.timeout.connect(grab)
        grabber.start()
        window.state.tensorflow_ready_changed.connect(ready)
        QTimer.singleShot(PROBE_TIMEOUT_S * 1000, lambda: (print(json.dumps({"painted_at": None}), flush=True),
                                                          os._exit(1)))

    main_window.MainWindow.show = show_and_watch
    return app.main([])


def _window_has_content(window) -> bool:
    """Whether the window's pixels, read back from the screen, show its widgets and text.

    A window that is mapped but not painted yet reads back as nothing or one
    colour; TL Studio's first page (sidebar, text, buttons) has many colours.
    """
    import numpy as np

    image = window.screen().grabWindow(window.winId()).toImage()
    if image.isNull() or image.width() < 100 or image.height() < 100:
        return False
    from PySide6.QtGui import QImage

    image = image.convertToFormat(QImage.Format.Format_RGB32)
    pixels = np.frombuffer(image.constBits(), dtype=np.uint32, count=image.sizeInBytes() // 4)
    return len(np.unique(pixels[::7])) >= MIN_PAINTED_COLOURS


if __name__ == "__main__":
    sys.exit(main())
