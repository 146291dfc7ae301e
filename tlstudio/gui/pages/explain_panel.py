"""Explain one image: Grad-CAM over it and the feature maps of a tensor of the base.

The user picks an image (double-click in the mistakes browser, "Open image…"
or a drop) and a tensor of the base with a spatial map (the cut tensor by
default; the combo lists every spatial tensor of the base's catalogue and
accepts a typed name) and, optionally, the class to explain instead of the
predicted one. A worker loads the run's model once
(:func:`tlstudio.core.use.predict.load_predictor`), then computes
:func:`~tlstudio.core.use.gradcam.grad_cam` with its
:func:`~tlstudio.core.use.gradcam.overlay`, and the
:func:`~tlstudio.core.use.activations.activations` laid out by
:func:`~tlstudio.core.use.activations.channel_grid`. A tensor without a spatial
map, an unreadable image or a model that cannot be loaded reach the user
through ``ProjectState.error`` with the engine's message.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.errors import TensorNameError, UserError
from tlstudio.gui import workers
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.drop_zone import local_paths
from tlstudio.gui.widgets.image_view import ImageView

DISPLAY_SIZE = 448
"""Images larger than this are shrunk for display (Grad-CAM still sees the whole image)."""
MAX_CHANNELS = 64
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff);;All files (*)"
ERROR_COLOUR = "#c0392b"


@dataclass(frozen=True, eq=False)
class Explainer:
    """A loaded model with the spatial tensors of its base, ready to explain images.

    ``tensors`` are (name, shape) of every spatial tensor of the base in layer
    order; ``default_tensor`` is where Grad-CAM looks unless told otherwise.
    """

    source: str
    predictor: Any
    tensors: tuple[tuple[str, tuple[int | None, ...]], ...]
    default_tensor: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.predictor.classes


@dataclass(frozen=True, eq=False)
class Explanation:
    """Everything the panel shows for one image, tensor and class."""

    path: str
    image: np.ndarray
    overlay: np.ndarray
    tensor: str
    class_index: int
    probabilities: np.ndarray
    grid: np.ndarray
    maps_shape: tuple[int, int, int]


def explainer_for(predictor: Any, source: str = "") -> Explainer:
    """An :class:`Explainer` for a loaded :class:`~tlstudio.core.use.predict.Predictor`."""
    from tlstudio.core.model import taps

    infos = taps.tensor_infos(predictor.model)
    spatial = tuple((info.name, info.shape) for info in infos[1:] if taps.is_spatial(info))
    try:
        default = taps.default_tensor(predictor.model).name
    except TensorNameError:
        default = spatial[-1][0] if spatial else ""
    return Explainer(source, predictor, spatial, default)


def load_explainer(source: str, on_event=None, should_stop=None) -> Explainer:
    """Load a run folder or exported model for explaining (in a worker thread)."""
    from tlstudio.core.use.predict import load_predictor

    return explainer_for(load_predictor(source), str(source))


def explain_image(
    explainer: Explainer, path: str, tensor: str | None, class_index: int | None, on_event=None, should_stop=None
) -> Explanation:
    """Grad-CAM and activations of ``path`` at ``tensor`` (None: the default) for ``class_index``
    (None: the predicted class), in a worker thread."""
    from tlstudio.core.use.activations import activations, channel_grid
    from tlstudio.core.use.gradcam import grad_cam, overlay
    from tlstudio.core.data.images import load_rgb

    image = load_rgb(path)
    model = explainer.predictor.model
    cam = grad_cam(model, image, tensor_name=tensor, class_index=class_index)
    shown = _shrink(image, DISPLAY_SIZE)
    maps = activations(model, image, cam.tensor)
    return Explanation(
        path=str(path),
        image=shown,
        overlay=overlay(shown, cam.heatmap),
        tensor=cam.tensor,
        class_index=cam.class_index,
        probabilities=cam.probabilities,
        grid=channel_grid(maps, max_channels=MAX_CHANNELS),
        maps_shape=tuple(int(d) for d in maps.shape),
    )


def _shrink(image: np.ndarray, limit: int) -> np.ndarray:
    height, width = image.shape[:2]
    if max(height, width) <= limit:
        return image
    from PIL import Image

    picture = Image.fromarray(image)
    picture.thumbnail((limit, limit), Image.Resampling.BILINEAR)
    return np.asarray(picture)


class ExplainPanel(QWidget):
    """Grad-CAM and activations of one image for the current run."""

    ready = Signal(object)
    explained = Signal(object)
    failed = Signal(object)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.source: str | None = None
        self.explainer: Explainer | None = None
        self.explanation: Explanation | None = None
        self.image_path: str | None = None
        self.job: workers.WorkerHandle | None = None
        self._pending = False
        self.setAcceptDrops(True)

        self.image_label = QLabel("No image chosen.")
        self.image_label.setWordWrap(True)
        self.image_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open image…")
        self.open_button.setToolTip("Choose an image file to explain; you can also drop one here, or double-click "
                                    "an image in the mistakes list.")
        self.open_button.clicked.connect(self._choose_image)
        self.tensor_combo = QComboBox()
        self.tensor_combo.setObjectName("explainTensor")
        self.tensor_combo.setEditable(True)
        self.tensor_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.tensor_combo.setMinimumContentsLength(18)
        self.tensor_combo.setToolTip(
            "The tensor of the base to look at, 'layer:index'. Grad-CAM needs a spatial map (height × width × "
            "channels): early tensors give sharp, local maps, late ones coarse maps of whole objects. The cut "
            "tensor (where the head looks) is the default."
        )
        self.tensor_combo.activated.connect(lambda _index: self.explain())
        self.tensor_combo.lineEdit().returnPressed.connect(self.explain)
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("The class whose evidence is shown: the predicted one, or any other.")
        self.class_combo.addItem("Predicted class", None)
        self.class_combo.activated.connect(lambda _index: self.explain())

        self.message = QLabel()
        self.message.setObjectName("explainMessage")
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.RichText)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.image_view = ImageView("Drop an image here, or double-click one in the mistakes list.")
        self.cam_view = ImageView("Grad-CAM: where the evidence for the class is (red: strong).")
        self.maps_view = ImageView("Activations: each tile is one channel of the tensor (white: strong).")
        self.image_caption = QLabel("<b>Image</b>")
        self.cam_caption = QLabel("<b>Grad-CAM</b>")
        self.maps_caption = QLabel("<b>Activations</b>")
        for caption in (self.image_caption, self.cam_caption, self.maps_caption):
            caption.setWordWrap(True)
            caption.setTextFormat(Qt.TextFormat.RichText)

        controls = QHBoxLayout()
        controls.addWidget(self.open_button)
        controls.addWidget(QLabel("Tensor"))
        controls.addWidget(self.tensor_combo)
        controls.addWidget(QLabel("Class"))
        controls.addWidget(self.class_combo)
        controls.addStretch(1)
        grid = QGridLayout()
        grid.addWidget(self.image_caption, 0, 0)
        grid.addWidget(self.cam_caption, 0, 1)
        grid.addWidget(self.maps_caption, 0, 2)
        grid.addWidget(self.image_view, 1, 0)
        grid.addWidget(self.cam_view, 1, 1)
        grid.addWidget(self.maps_view, 1, 2)
        for column in range(3):
            grid.setColumnStretch(column, 1)
        grid.setRowStretch(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.image_label)
        layout.addLayout(grid, 1)
        message_row = QHBoxLayout()
        message_row.addWidget(self.message, 1)
        self.suggestion_button = QPushButton()
        self.suggestion_button.setObjectName("explainSuggestion")
        self.suggestion_button.setVisible(False)
        self.suggestion_button.clicked.connect(self._use_suggestion)
        message_row.addWidget(self.suggestion_button)
        layout.addLayout(message_row)
        self._update_enabled()

    # ----- what to explain ----------------------------------------------------------------------------------

    def set_source(self, source: str | Path | None) -> None:
        """Explain with the model of this run folder (or exported model); it is loaded when first needed."""
        source = None if source is None else str(source)
        if source == self.source:
            return
        self.source = source
        self.explainer = None
        self.explanation = None
        self.cam_view.set_array(None)
        self.maps_view.set_array(None)
        if self.image_path is not None and source is not None:
            self.explain()

    def set_explainer(self, explainer: Explainer) -> None:
        """Use an already loaded model; fills the tensor and class choices."""
        self.explainer = explainer
        self.source = explainer.source or self.source
        typed = self.tensor_combo.currentText().strip()
        self.tensor_combo.clear()
        for name, shape in explainer.tensors:
            self.tensor_combo.addItem(name)
            dims = " × ".join(str(d) for d in shape[1:])
            self.tensor_combo.setItemData(self.tensor_combo.count() - 1, f"{name}: {dims}", Qt.ItemDataRole.ToolTipRole)
        self.tensor_combo.setCurrentText(typed or explainer.default_tensor)
        self.class_combo.clear()
        self.class_combo.addItem("Predicted class", None)
        for index, name in enumerate(explainer.classes):
            self.class_combo.addItem(name, index)
        self._update_enabled()
        self.ready.emit(explainer)

    def set_image(self, path: str | Path) -> None:
        """Explain this image file."""
        self.image_path = str(path)
        self.image_label.setText(f"<b>{html.escape(Path(path).name)}</b> "
                                 f"<span style='color:gray'>{html.escape(str(Path(path).parent))}</span>")
        self.explain()

    def _choose_image(self) -> None:
        start = str(Path(self.image_path).parent) if self.image_path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose an image to explain", start, IMAGE_FILTER)
        if path:
            self.set_image(path)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        paths, _ = local_paths(event.mimeData())
        if any(p.is_file() for p in paths):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's name
        files = [p for p in local_paths(event.mimeData())[0] if p.is_file()]
        if not files:
            event.ignore()
            return
        event.acceptProposedAction()
        self.set_image(files[0])

    # ----- work ---------------------------------------------------------------------------------------------

    def explain(self) -> None:
        """Compute Grad-CAM and activations for the chosen image, tensor and class in a worker."""
        if self.image_path is None:
            return
        if self.job is not None:
            self._pending = True
            return
        self._pending = False
        if self.explainer is None:
            if self.source is None:
                self.message.setText("Train a model or open a run on the Evaluate page first: Grad-CAM needs a "
                                     "trained model.")
                return
            self._start(load_explainer, self.source, on_done=self._on_loaded, busy="Loading the run's model…")
            return
        tensor = self.tensor_combo.currentText().strip() or None
        class_index = self.class_combo.currentData()
        self._start(explain_image, self.explainer, self.image_path, tensor, class_index,
                    on_done=self._on_explained, busy="Computing Grad-CAM…")

    def _start(self, fn, *args, on_done, busy: str) -> None:
        self.message.setText(busy)
        self.state.busy.emit(busy)
        job = workers.run_in_thread(fn, *args, on_done=on_done, on_error=self._on_error, name="explain",
                                    kind=workers.JobKind.EXPLAIN)
        job.finished.connect(lambda j=job: self._on_finished(j))
        self.job = job
        self._update_enabled()

    def _on_loaded(self, explainer: Explainer) -> None:
        self.set_explainer(explainer)
        self._pending = True

    def _on_explained(self, explanation: Explanation) -> None:
        self.explanation = explanation
        classes = self.explainer.classes if self.explainer is not None else ()
        probabilities = explanation.probabilities
        predicted = int(np.argmax(probabilities))
        chosen = explanation.class_index
        self.image_view.set_array(explanation.image)
        self.cam_view.set_array(explanation.overlay)
        self.maps_view.set_array(explanation.grid)
        tensor = html.escape(explanation.tensor)
        self.image_caption.setText(
            f"<b>Image</b> — predicted <b>{html.escape(classes[predicted])}</b> ({probabilities[predicted]:.1%})"
        )
        self.cam_caption.setText(
            f"<b>Grad-CAM</b> of <b>{html.escape(classes[chosen])}</b> ({probabilities[chosen]:.1%}) at {tensor}"
        )
        height, width, channels = explanation.maps_shape
        shown = min(channels, MAX_CHANNELS)
        strongest = f", the {shown} most active shown" if shown < channels else ""
        self.maps_caption.setText(
            f"<b>Activations</b> of {tensor}: {channels} maps of {height} × {width}{strongest}"
        )
        self.suggestion_button.setVisible(False)
        self.message.setText(
            "Red areas raised the class's score most. Change the tensor to compare an early (sharp, local) "
            "and a late (coarse, whole-object) view."
        )
        self.explained.emit(explanation)

    def _on_error(self, error: BaseException) -> None:
        """A user mistake (a tensor name) is said here once, with a "Use …" fix; a bug goes to the dialog."""
        self.message.setText(f"<span style='color:{ERROR_COLOUR}'>{html.escape(str(error))}</span>")
        suggestions = getattr(error, "suggestions", ()) if isinstance(error, TensorNameError) else ()
        self.suggestion_button.setVisible(bool(suggestions))
        if suggestions:
            self.suggestion_button.setText(f"Use {suggestions[0]}")
            self.suggestion_button.setProperty("tensor", suggestions[0])
        if not isinstance(error, UserError):
            self.state.error.emit(error)
        self.failed.emit(error)

    def _use_suggestion(self) -> None:
        self.suggestion_button.setVisible(False)
        self.tensor_combo.setCurrentText(self.suggestion_button.property("tensor"))
        self.explain()

    def _on_finished(self, job: workers.WorkerHandle) -> None:
        if self.job is not job:
            return
        self.job = None
        self.state.busy.emit("")
        self._update_enabled()
        if self._pending:
            self.explain()

    def _update_enabled(self) -> None:
        self.class_combo.setEnabled(self.explainer is not None)
