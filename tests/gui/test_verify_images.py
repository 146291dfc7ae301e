"""The Data page offers a full decode when the scan finds damaged-looking files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.data.samples import make_sample_folders
from tlstudio.core.data.verify import suspicious_files, verify_images
from tlstudio.core.spec.errors import Cancelled
from tlstudio.gui.pages.data_page import DataPage
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.verify_bar import VerifyBar


def corrupt_pixels(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    start = raw.index(b"IDAT") + 6
    raw[start:start + 30] = bytes(b ^ 0x5A for b in raw[start:start + 30])
    path.write_bytes(bytes(raw))


@pytest.fixture
def damaged(tmp_path) -> Path:
    root = make_sample_folders(tmp_path / "images", classes=("a", "b"), per_class=5, size=24)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)  # a damaged header: suspicious
    corrupt_pixels(root / "b" / sorted(p.name for p in (root / "b").iterdir())[0])  # passes the header scan
    return root


def test_verify_images_reports_the_bad_ones_and_can_be_cancelled(damaged):
    dataset = scan_dataset([damaged])
    assert suspicious_files(dataset)
    report = verify_images(dataset)
    assert [Path(b.path).parent.name for b in report.bad] == ["b"]
    assert report.summary() == "9 images decode; 1 could not be read and are left out."
    assert report.dataset.counts == {"a": 5, "b": 4}
    with pytest.raises(Cancelled):
        verify_images(dataset, should_stop=lambda: True)


def test_the_bar_runs_in_the_background_and_reports(qtbot, damaged):
    bar = VerifyBar()
    qtbot.addWidget(bar)
    bar.offer(scan_dataset([damaged]))
    assert not bar.isHidden()
    assert bar.label.text().startswith("1 file looks damaged (see Problems)")
    with qtbot.waitSignal(bar.verified, timeout=30_000) as blocker:
        qtbot.mouseClick(bar.verify_button, Qt.MouseButton.LeftButton)
    assert len(blocker.args[0].bad) == 1
    qtbot.waitUntil(lambda: not bar.is_running())


def test_cancel_leaves_the_dataset_as_it_was(qtbot, damaged, monkeypatch):
    from tlstudio.core.data import verify

    def slow(path, should_stop):
        while not should_stop():
            pass
        return None

    monkeypatch.setattr(verify, "_decode_reason", slow)
    bar = VerifyBar()
    qtbot.addWidget(bar)
    bar.offer(scan_dataset([damaged]))
    emitted = []
    bar.verified.connect(emitted.append)
    bar.start()
    assert bar.is_running()
    bar.cancel()
    qtbot.waitUntil(lambda: not bar.is_running(), timeout=10_000)
    assert emitted == [] and "cancelled" in bar.label.text()


def test_the_data_page_moves_bad_images_into_problems(qtbot, damaged):
    page = DataPage(ProjectState())
    qtbot.addWidget(page)
    page.show()
    with qtbot.waitSignal(page.scan_finished, timeout=20_000):
        page.set_folders([str(damaged)])
    assert not page.verify_bar.isHidden()
    with qtbot.waitSignal(page.verify_bar.verified, timeout=30_000):
        page.verify_bar.start()
    problems = [page.problems_table.topLevelItem(i).toolTip(0) for i in range(page.problems_table.topLevelItemCount())]
    assert any(Path(p).parent.name == "b" for p in problems)
    assert page.state.dataset.counts == {"a": 5, "b": 4}
    assert page.verify_bar.isHidden()
