"""GUI test isolation: no worker thread outlives the test that started it."""

from __future__ import annotations

import pytest

from tlstudio.gui import workers


@pytest.fixture(autouse=True)
def _no_leftover_workers(qapp):
    """Stop and wait for every worker after each test, so threads never reach a later test's widgets."""
    yield
    workers.stop_all(60_000)
    qapp.processEvents()
