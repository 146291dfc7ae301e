"""The one hidden-units parser the app and the CLI share."""

from __future__ import annotations

import pytest

from tlstudio.core.spec.errors import RecipeError
from tlstudio.core.spec.hidden_units import hidden_units_text, parse_hidden_units


@pytest.mark.parametrize(
    "text, units",
    [("256, 128", (256, 128)), ("256 128", (256, 128)), ("256,128", (256, 128)), ("256;128", (256, 128)),
     (" 64 ", (64,)), ("", ()), ("  ", ()), ("8,,4", (8, 4))],
)
def test_separators_all_mean_one_layer_each(text, units):
    assert parse_hidden_units(text) == units


@pytest.mark.parametrize("text", ["12, x", "1.5", "256_128", "+5", "1e3", "٣", "-4", "0", "100000",
                                  "64 " * 9])
def test_bad_sizes_are_refused_naming_the_text(text):
    with pytest.raises(RecipeError, match="Received") as caught:
        parse_hidden_units(text)
    assert repr(text) in str(caught.value)


def test_text_reads_back_to_the_same_layers():
    assert parse_hidden_units(hidden_units_text((256, 128, 7))) == (256, 128, 7)
    assert hidden_units_text(()) == ""
