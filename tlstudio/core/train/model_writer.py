"""The run folder's best model, written while the head goes on training.

A VGG16 classifier is a 59 MB file and takes about a quarter of a second to
write: as long as several epochs of a head on cached features. While only the
head trains, the base does not change, so :class:`ModelWriter` can write a
copy of the classifier that shares the base and holds copies of the head's
layers (with the weights of the better epoch) in a background thread while the
next epochs run. When the base trains too (fine-tuning) the model is written
at once. One model is written at a time: the next write, the end of the run
and an error wait for the one under way.

``metrics.json`` always describes the ``model.keras`` beside it: the model is
renamed into place and its metrics written under one lock, and an epoch's own
record of progress (:meth:`ModelWriter.record_epoch`), under the same lock,
repeats the saved model's metrics.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from tlstudio.core.train import runs


class ModelWriter:
    """Writes ``model.keras`` into a run folder, then ``metrics.json`` describing it.

    ``frozen`` is the classifier up to its trainable head layers ``head``
    (:func:`tlstudio.core.train.batch_norm.split_head`); ``saved`` the metrics of
    the model the folder already holds (a resumed run's), or None.
    """

    def __init__(self, folder: Path, model: Any, frozen: Any, head: list, saved: dict[str, float] | None) -> None:
        self.folder = folder
        self.saved = saved
        """The metrics of the model in the folder (None: no model yet)."""
        self._model, self._frozen, self._head = model, frozen, head
        self._copy: tuple[Any, list] | None = None
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self._progress: dict[str, float] = {}

    def write(self, metrics: dict[str, float], in_background: bool = False) -> None:
        """Write the classifier as it is now, described by ``metrics``.

        ``in_background`` only while the base does not change. Raises the
        error of this write (OSError for a full or read-only disk), or of the
        one before it that ran in the background.
        """
        self.wait()
        if not in_background:
            self._write(self._model, metrics)
            return
        copy, layers = self._head_copy()
        for target, source in zip(layers, self._head, strict=True):
            target.set_weights(source.get_weights())
        self._thread = threading.Thread(target=self._write_in_background, args=(copy, metrics),
                                        name="tlstudio-model-writer", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise the error of a background write that has failed; do not wait for one under way."""
        if self._thread is not None and not self._thread.is_alive():
            self.wait()

    def wait(self) -> None:
        """Wait for a background write; raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def wait_quietly(self) -> None:
        """Wait for a background write; its error no longer matters (the run is ending or has failed)."""
        try:
            self.wait()
        except Exception:  # the run's own error, or the final write's, is the one to report
            pass

    def record_epoch(self, progress: dict[str, float], write_files: Callable[[dict[str, float] | None], None]) -> None:
        """Write an epoch end's files with ``write_files(metrics)``: ``metrics`` are the saved model's with the
        run's ``progress`` (epochs done, images skipped), None while the folder holds no model. A model
        written meanwhile in the background writes its metrics before or after these, never between."""
        with self._lock:
            self._progress = dict(progress)
            write_files(None if self.saved is None else {**self.saved, **progress})

    def _write_in_background(self, model: Any, metrics: dict[str, float]) -> None:
        try:
            self._write(model, metrics)
        except Exception as error:  # raised in the training thread by the next check or wait
            self._error = error

    def _write(self, model: Any, metrics: dict[str, float]) -> None:
        def publish(rename: Callable[[], None]) -> None:  # the model and its metrics appear together
            with self._lock:
                rename()
                self.saved = metrics
                runs.write_json(self.folder / runs.METRICS_FILE, {**metrics, **self._progress})

        runs.save_model_atomically(model, self.folder / runs.MODEL_FILE, publish)

    def _head_copy(self) -> tuple[Any, list]:
        """A classifier sharing the base (and every layer before the head) with copies of the head's layers."""
        if self._copy is None:
            import keras

            x = self._frozen.outputs[0]
            layers = []
            for layer in self._head:  # the same settings and dtype policy object: the same saved config
                copy = type(layer).from_config({**layer.get_config(), "dtype": layer.dtype_policy})
                x = copy(x)
                layers.append(copy)
            self._copy = (keras.Model(self._model.input, x, name=self._model.name), layers)
        return self._copy
