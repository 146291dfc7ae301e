"""A run's title and notes: stored beside the run, never hiding it when damaged."""

from __future__ import annotations

import pytest

from tlstudio.core.spec.errors import UserError
from tlstudio.core.train.run_notes import NOTES_FILE, RunNotes, read_notes, write_notes


def test_notes_round_trip_and_default_to_empty(tmp_path):
    assert read_notes(tmp_path) == RunNotes()
    write_notes(tmp_path, RunNotes("lite0, cut earlier", "more sunsets\nfewer beaches"))
    assert read_notes(tmp_path) == RunNotes("lite0, cut earlier", "more sunsets\nfewer beaches")
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_damaged_notes_file_reads_as_no_notes(tmp_path):
    (tmp_path / NOTES_FILE).write_text("{ not json")
    assert read_notes(tmp_path) == RunNotes()
    (tmp_path / NOTES_FILE).write_text('["a list"]')
    assert read_notes(tmp_path) == RunNotes()


def test_a_title_is_one_short_line():
    with pytest.raises(UserError, match="one line"):
        RunNotes("two\nlines")


def test_a_full_disk_gives_a_clear_message_and_keeps_the_old_notes(tmp_path, monkeypatch):
    import errno

    from tlstudio.core.train import run_notes

    write_notes(tmp_path, RunNotes("kept"))

    def full(path, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_notes, "write_json", full)
    with pytest.raises(UserError, match="Cannot save the notes.*No space left"):
        write_notes(tmp_path, RunNotes("lost"))
    assert read_notes(tmp_path).title == "kept"
