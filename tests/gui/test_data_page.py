"""The Data page: folders dropped from a file manager, the class table, problems, thumbnails."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from tlstudio.core.data.samples import make_sample_folders
from tlstudio.gui.pages.data_page import DataPage
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.thumbnails import ThumbnailGrid


@pytest.fixture
def page(qtbot):
    widget = DataPage(ProjectState())
    qtbot.addWidget(widget)
    widget.resize(1100, 760)
    widget.show()
    return widget


def drop(widget, paths, modifiers=Qt.KeyboardModifier.NoModifier) -> QDropEvent:
    """Drag ``paths`` onto ``widget`` as a file manager does: enter, then drop, with file URLs."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    centre = widget.rect().center()
    enter = QDragEnterEvent(centre, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, modifiers)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, modifiers)
    QApplication.sendEvent(widget, event)
    return event


def drop_and_scan(qtbot, page, paths, **kw):
    with qtbot.waitSignal(page.scan_finished, timeout=20_000) as blocker:
        drop(page.drop_zone, paths, **kw)
    return blocker.args[0]


def class_rows(page) -> dict[str, tuple[bool, str, str]]:
    table = page.class_table
    return {
        table.item(row, 1).text(): (
            table.item(row, 0).checkState() == Qt.CheckState.Checked,
            table.item(row, 2).text(),
            table.item(row, 3).text(),
        )
        for row in range(table.rowCount())
    }


def test_drop_a_folder_with_class_subfolders(qtbot, page, image_root):
    dataset = drop_and_scan(qtbot, page, [image_root])
    assert dataset.layout == "class-folders"
    assert page.state.dataset is dataset
    assert page.state.recipe.data.folders == (str(image_root),)
    assert class_rows(page) == {name: (True, "10", "2") for name in ("circles", "squares", "stripes")}
    assert "3 classes" in page.summary_label.text() and "36 images" in page.summary_label.text()
    assert page.thumbnails.model().rowCount() == 36
    assert not page.message_label.isVisible()


def test_drop_a_folder_with_train_and_val(qtbot, page, tmp_path):
    root = tmp_path / "split"
    make_sample_folders(root / "train", per_class=8)
    make_sample_folders(root / "val", per_class=3, seed=1)
    dataset = drop_and_scan(qtbot, page, [root])
    assert dataset.layout == "split-folders"
    assert class_rows(page)["circles"] == (True, "8", "3")
    assert not page.val_spin.isEnabled()


def test_drop_several_class_folders_together(qtbot, page, image_root):
    folders = sorted(image_root.iterdir())
    dataset = drop_and_scan(qtbot, page, folders)
    assert dataset.layout == "folder-per-class"
    assert dataset.classes == ("circles", "squares", "stripes")
    assert page.state.recipe.data.folders == tuple(str(f) for f in folders)


def test_ctrl_drop_adds_a_class_folder(qtbot, page, image_root):
    circles, squares, _ = sorted(image_root.iterdir())
    drop_and_scan(qtbot, page, [circles])
    assert "at least 2 classes" in page.warnings_label.text()
    dataset = drop_and_scan(qtbot, page, [squares], modifiers=Qt.KeyboardModifier.ControlModifier)
    assert dataset.classes == ("circles", "squares")


def test_dropping_a_file_says_so_and_keeps_the_data(qtbot, page, image_root):
    drop_and_scan(qtbot, page, [image_root])
    before = page.state.recipe
    image = next((image_root / "circles").iterdir())
    drop(page.drop_zone, [image])
    assert page.message_label.isVisible()
    assert "is a file, not a folder" in page.message_label.text()
    assert page.state.recipe == before
    assert page.state.dataset.classes == ("circles", "squares", "stripes")


def test_an_empty_folder_says_so_and_keeps_the_data(qtbot, page, image_root, tmp_path):
    drop_and_scan(qtbot, page, [image_root])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert drop_and_scan(qtbot, page, [empty]) is None
    assert "the folder is empty" in page.message_label.text()
    assert page.state.recipe.data.folders == (str(image_root),)
    assert page.state.dataset.classes == ("circles", "squares", "stripes")


def test_a_folder_of_non_images_says_so(qtbot, page, tmp_path):
    notes = tmp_path / "notes"
    (notes / "a").mkdir(parents=True)
    (notes / "a" / "readme.txt").write_text("hello")
    (notes / "a" / "data.csv").write_text("1,2,3")
    assert drop_and_scan(qtbot, page, [notes]) is None
    text = page.message_label.text()
    assert "No usable images" in text and "readme.txt" in text
    assert page.state.recipe.data.folders == ()


def test_excluding_a_class_is_one_click(qtbot, page, image_root):
    drop_and_scan(qtbot, page, [image_root])
    with qtbot.waitSignal(page.scan_finished, timeout=20_000) as blocker:
        page.set_class_excluded("stripes", True)
    assert page.state.recipe.data.excluded_classes == ("stripes",)
    assert blocker.args[0].classes == ("circles", "squares")
    rows = class_rows(page)
    assert rows["stripes"][0] is False and rows["stripes"][1] == "excluded"
    with qtbot.waitSignal(page.scan_finished, timeout=20_000) as blocker:
        page.set_class_excluded("stripes", False)
    assert blocker.args[0].classes == ("circles", "squares", "stripes")


def test_split_settings_rescan(qtbot, page, image_root):
    drop_and_scan(qtbot, page, [image_root])
    with qtbot.waitSignal(page.scan_finished, timeout=20_000) as blocker:
        page.val_spin.setValue(50)
    assert page.state.recipe.data.val_fraction == 0.5
    assert len(blocker.args[0].val) == 18


def test_problems_list_and_reveal(qtbot, page, image_root, monkeypatch):
    broken = image_root / "circles" / "broken.png"
    broken.write_text("not really a picture")
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    drop_and_scan(qtbot, page, [image_root])
    assert page.problems_table.topLevelItemCount() == 1
    item = page.problems_table.topLevelItem(0)
    assert item.text(0) == "broken.png" and item.text(1)
    page.problems_table.itemDoubleClicked.emit(item, 0)
    assert opened == [str(image_root / "circles")]
    assert page.tabs.tabText(1) == "Problems (1)"


def test_duplicates_and_imbalance_are_reported(qtbot, page, tmp_path):
    root = make_sample_folders(tmp_path / "data", classes=("many",), per_class=16)
    make_sample_folders(root, classes=("few",), per_class=4, seed=3)
    (root / "many" / "copy.png").write_bytes((root / "many" / "many_000.png").read_bytes())
    drop_and_scan(qtbot, page, [root])
    text = page.warnings_label.text()
    assert "imbalanced" in text and "'few'" in text
    assert page.duplicates_tree.topLevelItemCount() == 1


def test_thumbnails_load_only_visible_rows(qtbot, image_root):
    real = sorted(str(p) for p in image_root.rglob("*.png"))
    fake = [f"/nonexistent/{n:05d}.png" for n in range(10_000 - len(real))]
    grid = ThumbnailGrid()
    qtbot.addWidget(grid)
    grid.resize(600, 400)
    grid.set_items([(p, "x") for p in real + fake])
    grid.show()
    qtbot.waitExposed(grid)
    qtbot.waitUntil(lambda: grid.thumbnails.is_cached(real[0]), timeout=10_000)
    assert grid.model().rowCount() == 10_000
    assert grid.thumbnails.requests < 200
    grid.scrollToBottom()
    qtbot.wait(50)
    assert grid.thumbnails.loader.pending() <= grid.thumbnails.loader.max_pending
    assert grid.thumbnails.requests < 400
    grid.thumbnails.loader.shutdown()


def test_add_folder_button(qtbot, page, image_root, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(image_root))
    with qtbot.waitSignal(page.scan_finished, timeout=20_000):
        qtbot.mouseClick(page.add_button, Qt.MouseButton.LeftButton)
    assert page.state.recipe.data.folders == (str(image_root),)


def test_train_val_test_folders_fill_the_test_column_and_fix_the_split(qtbot, page, tmp_path):
    root = tmp_path / "split"
    for split, count in (("train", 6), ("val", 3), ("test", 2)):
        make_sample_folders(root / split, classes=("cats", "dogs"), per_class=count, seed=len(split))
    drop_and_scan(qtbot, page, [root])
    table = page.class_table
    assert [table.horizontalHeaderItem(c).text() for c in range(5)] == ["Use", "Class", "Train", "Val", "Test"]
    assert [table.item(0, c).text() for c in (2, 3, 4)] == ["6", "3", "2"]
    assert "train/, val/ and test/" in page.summary_label.text()
    assert not page.val_spin.isEnabled() and not page.seed_spin.isEnabled()
    assert "already have train/ and val/" in page.seed_spin.toolTip()
    assert page.problems_table.topLevelItem(0).text(0) == "No problems found"
    assert page.duplicates_tree.topLevelItem(0).text(0) == "No duplicates"


def test_one_class_is_not_one_classes(qtbot, page, tmp_path):
    root = make_sample_folders(tmp_path / "one", classes=("only",), per_class=1)
    drop_and_scan(qtbot, page, [root])
    text = page.summary_label.text()
    assert "1 class</b>" in text and "1 image</b>" in text
