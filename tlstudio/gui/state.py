"""The project the window shows: one recipe plus what was computed from it.

Pages take a :class:`ProjectState` in their constructor, edit it through its
methods and follow its signals, so a test can change the state and check that
a page followed (napari's ``QtDims(dims)`` pattern). Each part of the recipe
has its own signal (``data_changed``, ``base_changed``, ``cut_changed``,
``head_changed``, ``training_changed``), emitted only when that part changed,
so a widget re-syncs only what it shows; ``recipe_changed`` follows any change
(for whatever shows the whole recipe).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec, load_project, save_project

if TYPE_CHECKING:  # TensorFlow is imported in the background; these are only names here
    import keras

    from tlstudio.core.data.dataset import Dataset
    from tlstudio.core.train.training import RunResult

SECTIONS = ("data", "base", "cut_tensor", "head", "training")
"""The recipe's parts, each with its own signal."""


class ProjectState(QObject):
    """The recipe being edited, the scanned dataset, the base model and the last run."""

    recipe_changed = Signal(object)
    """Any part of the recipe changed (the new :class:`Recipe`)."""
    data_changed = Signal(DataSpec)
    base_changed = Signal(BaseSpec)
    cut_changed = Signal(object)
    """The cut tensor's name, or None for the base model's default."""
    head_changed = Signal(HeadSpec)
    training_changed = Signal(TrainSpec)
    dataset_changed = Signal(object)
    base_model_changed = Signal(object)
    run_finished = Signal(object)
    evaluated = Signal(object)
    """The Evaluate page showed an evaluation (the Data page's map rings its mistakes)."""
    busy = Signal(str)
    error = Signal(object)
    dirty_changed = Signal(bool)
    path_changed = Signal(object)
    tensorflow_ready_changed = Signal(bool)

    def __init__(self, recipe: Recipe | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._recipe = recipe or Recipe()
        self._dataset: Dataset | None = None
        self._base_model: keras.Model | None = None
        self._last_run: RunResult | None = None
        self._path: Path | None = None
        self._dirty = False
        self._tensorflow_ready = False

    @property
    def recipe(self) -> Recipe:
        return self._recipe

    @property
    def dataset(self) -> Dataset | None:
        """The last :class:`tlstudio.core.data.dataset.Dataset` scanned from the recipe's folders, or None."""
        return self._dataset

    @property
    def base_model(self) -> keras.Model | None:
        """The built base model (a Keras model) for ``recipe.base``, or None until built."""
        return self._base_model

    @property
    def last_run(self) -> RunResult | None:
        """The :class:`tlstudio.core.train.training.RunResult` of the last finished training, or None."""
        return self._last_run

    @property
    def path(self) -> Path | None:
        """The project file this state was opened from or saved to."""
        return self._path

    @property
    def dirty(self) -> bool:
        """True when the recipe changed since it was last opened or saved."""
        return self._dirty

    @property
    def tensorflow_ready(self) -> bool:
        """True once TensorFlow and Keras are imported (the app loads them in the background).

        Actions that need TensorFlow stay disabled until then, so the window
        never freezes on a first import.
        """
        return self._tensorflow_ready

    def set_tensorflow_ready(self, ready: bool = True) -> None:
        if ready != self._tensorflow_ready:
            self._tensorflow_ready = ready
            self.tensorflow_ready_changed.emit(ready)

    def set_recipe(self, recipe: Recipe) -> None:
        """Replace the whole recipe; marks the project as changed."""
        if recipe == self._recipe:
            return
        old, self._recipe = self._recipe, recipe
        self._emit_sections(old)
        self._set_dirty(True)

    def set_starting_recipe(self, recipe: Recipe) -> None:
        """Replace the recipe of a project nobody has changed yet, without marking it changed."""
        old, self._recipe = self._recipe, recipe
        self._emit_sections(old)

    def update(self, section: str | None = None, **changes: Any) -> None:
        """Change some fields, of the recipe itself or of one section.

        ``update(cut_tensor="block4_pool:0")`` changes a top-level field;
        ``update("head", batch_norm=False)`` changes a field of ``recipe.head``.
        Invalid values raise :class:`tlstudio.core.spec.errors.RecipeError`.
        """
        if section is None:
            self.set_recipe(self._recipe.replace(**changes))
            return
        current = getattr(self._recipe, section)
        self.set_recipe(self._recipe.replace(**{section: dataclasses.replace(current, **changes)}))

    def _emit_sections(self, old: Recipe | None) -> None:
        """Emit the signal of each part that differs from ``old`` (all of them when None), then recipe_changed."""
        signals = {"data": self.data_changed, "base": self.base_changed, "cut_tensor": self.cut_changed,
                   "head": self.head_changed, "training": self.training_changed}
        for section in SECTIONS:
            value = getattr(self._recipe, section)
            if old is None or getattr(old, section) != value:
                signals[section].emit(value)
        self.recipe_changed.emit(self._recipe)

    def set_dataset(self, dataset: Dataset | None) -> None:
        self._dataset = dataset
        self.dataset_changed.emit(dataset)

    def set_base_model(self, model: keras.Model | None) -> None:
        self._base_model = model
        self.base_model_changed.emit(model)

    def set_last_run(self, result: RunResult | None) -> None:
        self._last_run = result
        self.run_finished.emit(result)

    def open(self, path: str | Path) -> None:
        """Load a project file; the dataset and base model are cleared for rebuilding."""
        recipe = load_project(path)
        self._path = Path(path)
        self._recipe = recipe
        self.set_dataset(None)
        self.set_base_model(None)
        self._emit_sections(None)
        self.path_changed.emit(self._path)
        self._set_dirty(False)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the project file (to ``path``, or where it was last saved)."""
        target = Path(path) if path is not None else self._path
        if target is None:
            raise ValueError("save() needs a path for a project that was never saved")
        save_project(self._recipe, target)
        if target != self._path:
            self._path = target
            self.path_changed.emit(target)
        self._set_dirty(False)
        return target

    def new(self) -> None:
        """Start an empty project."""
        self._path = None
        self._recipe = Recipe()
        self.set_dataset(None)
        self.set_base_model(None)
        self._last_run = None
        self._emit_sections(None)
        self.path_changed.emit(None)
        self._set_dirty(False)

    def _set_dirty(self, dirty: bool) -> None:
        if dirty != self._dirty:
            self._dirty = dirty
            self.dirty_changed.emit(dirty)
