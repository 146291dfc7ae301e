"""Settings read from environment variables, checked the same way everywhere.

A bad value is the user's mistake: it raises :class:`UserError` naming the
variable and the value received, never a bare ``ValueError``.
"""

from __future__ import annotations

import os

from tlstudio.core.spec.errors import UserError


def megabytes_from_env(name: str, default_bytes: int, what_zero_means: str) -> int:
    """Bytes from the environment variable ``name``, a size in megabytes (2**20 bytes), 0 or more.

    ``default_bytes`` when the variable is unset or blank. ``what_zero_means``
    completes the error message's "(0 ...)", e.g. ``"turns the feature cache off"``.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default_bytes
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        raise UserError(
            f"{name} must be a size in megabytes, 0 or more (0 {what_zero_means}). Received: {name}={raw!r}"
        )
    return int(megabytes * 2**20)
