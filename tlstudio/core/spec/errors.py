"""The engine's error hierarchy.

Every error a user can cause derives from :class:`UserError`. Its message says
what happened, what was expected and how to fix it, naming the value received
(Keras' style: "... Received: weights='x'"). The GUI shows these in its error
dialog and the CLI prints them as one line; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: bad input, missing file, wrong name."""


class DataError(UserError):
    """The image folders cannot be used as given."""


class ImageError(UserError):
    """One image file cannot be read; ``reason`` is a short phrase for reports."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"Cannot use image {path!r}: {reason}.")
        self.path = path
        self.reason = reason


class RecipeError(UserError):
    """A recipe or project file holds a value outside what is allowed."""


class WeightsError(UserError):
    """Pretrained weights cannot be found, fetched or verified."""


class ModelFileError(UserError):
    """A user's model file cannot be loaded safely."""


class TensorNameError(UserError):
    """A cut tensor name does not name a usable tensor.

    ``suggestions`` holds the tensor names the user most likely meant, best
    first, so a GUI can offer them as one-click fixes.
    """

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.suggestions = suggestions


class TrainingError(UserError):
    """Training stopped for a reason the user can act on (NaN loss, memory)."""


class ClusterError(UserError):
    """Training on several machines cannot start: a malformed TF_CONFIG, a worker that does not answer."""


class ExportError(UserError):
    """An export destination or format cannot be written."""


class Cancelled(Exception):
    """Long work was stopped on request; not an error to show."""
