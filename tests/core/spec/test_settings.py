"""Settings from environment variables: sizes in megabytes, and the errors a bad one raises."""

from __future__ import annotations

import pytest

from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.settings import megabytes_from_env

NAME = "TLSTUDIO_TEST_MB"


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_unset_or_blank_gives_the_default(monkeypatch, raw):
    if raw is None:
        monkeypatch.delenv(NAME, raising=False)
    else:
        monkeypatch.setenv(NAME, raw)
    assert megabytes_from_env(NAME, 1234, "turns it off") == 1234


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("2", 2 * 2**20), (" 1.5 ", 3 * 2**19)])
def test_megabytes_become_bytes(monkeypatch, raw, expected):
    monkeypatch.setenv(NAME, raw)
    assert megabytes_from_env(NAME, 1, "turns it off") == expected


@pytest.mark.parametrize("raw", ["big", "-3", "nan"])
def test_a_bad_value_names_the_variable_and_what_zero_means(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(UserError, match=rf"{NAME} must be .*\(0 turns it off\)\. Received: {NAME}='{raw}'"):
        megabytes_from_env(NAME, 1, "turns it off")
