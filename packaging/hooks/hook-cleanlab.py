"""PyInstaller hook for cleanlab (the data health check).

``cleanlab/__init__.py`` imports its method modules eagerly, and
``cleanlab.classification`` imports ``cleanlab.experimental.label_issues_batched``
(plain numpy); they are all bundled. ``Datalab`` and the experimental models are
left out: they need the Hugging Face ``datasets`` package or a deep-learning back
end that TL Studio does not use (cleanlab imports them only when asked for).
"""

from PyInstaller.utils.hooks import collect_submodules

_SKIPPED = (
    "cleanlab.datalab",
    "cleanlab.experimental.cifar_cnn",
    "cleanlab.experimental.coteaching",
    "cleanlab.experimental.mnist_pytorch",
    "cleanlab.experimental.span_classification",
)

hiddenimports = collect_submodules("cleanlab", filter=lambda name: not name.startswith(_SKIPPED))
excludedimports = list(_SKIPPED)
