"""PyInstaller hook for cleanlab (the data health check).

``cleanlab/__init__.py`` imports its method modules eagerly; they are all
bundled. ``Datalab`` and the experimental models are left out: they need the
Hugging Face ``datasets`` package or a deep-learning back end that TL Studio
does not use (cleanlab imports Datalab only when it is asked for).
"""

from PyInstaller.utils.hooks import collect_submodules

_SKIPPED = ("cleanlab.datalab", "cleanlab.experimental")

hiddenimports = collect_submodules("cleanlab", filter=lambda name: not name.startswith(_SKIPPED))
excludedimports = list(_SKIPPED)
