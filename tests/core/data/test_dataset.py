"""Scanning folders: layouts, skipped files, the split, duplicates, verification."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_factory import BAD_FILES, GOOD_IMAGES, deny_reading, write_bad_files, write_good_images
from tlstudio.core.data import images
from tlstudio.core.data.dataset import (
    Dataset,
    ImageItem,
    SkippedFile,
    scan_data_spec,
    scan_dataset,
)
from tlstudio.core.data.verify import verify_dataset
from tlstudio.core.spec.errors import Cancelled, DataError
from tlstudio.core.spec.events import Message, Progress
from tlstudio.core.data.images import load_rgb
from tlstudio.core.spec.recipe import DataSpec


def write_class(folder: Path, count: int, seed: int = 0, size: int = 8) -> list[Path]:
    """``count`` distinct small PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for n in range(count):
        path = folder / f"img_{n:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def names(items) -> set[str]:
    return {os.path.basename(item.path) for item in items}


def reasons(dataset: Dataset) -> dict[str, str]:
    return {os.path.basename(s.path): s.reason for s in dataset.skipped}


@pytest.fixture
def mixed_root(tmp_path, monkeypatch) -> Path:
    """Class ``mixed`` holds every good kind of image and every bad kind of file."""
    root = tmp_path / "data"
    write_good_images(root / "mixed")
    write_bad_files(root / "mixed")
    write_class(root / "plain", 4)
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    deny_reading(monkeypatch, images, "locked.jpg")
    return root


def test_mixed_folder_keeps_every_good_image_and_reports_every_bad_file(mixed_root):
    dataset = scan_dataset([mixed_root])
    found = reasons(dataset)

    header_bad = {name: reason for name, reason in BAD_FILES.items() if name != "truncated.jpg"}
    for name, reason in header_bad.items():
        assert found[name].startswith(reason), (name, found.get(name))
    mixed = dataset.classes.index("mixed")
    usable = {os.path.basename(i.path) for i in (*dataset.train, *dataset.val) if i.label == mixed}
    assert usable == set(GOOD_IMAGES) | {"truncated.jpg"}
    assert len(dataset.skipped) == len(header_bad)

    for item in (*dataset.train, *dataset.val):
        name = os.path.basename(item.path)
        if name in GOOD_IMAGES:
            height, width = GOOD_IMAGES[name][2]
            assert load_rgb(item.path).shape == (height, width, 3)
            assert item.size_bytes == os.path.getsize(item.path)

    verified = verify_dataset(dataset)
    assert reasons(verified)["truncated.jpg"] == "truncated or corrupt image"
    assert names((*verified.train, *verified.val)) == set(GOOD_IMAGES) | names(
        i for i in (*dataset.train, *dataset.val) if i.label != mixed
    )
    assert verified.counts == {"mixed": len(GOOD_IMAGES), "plain": 4}


def test_symlink_loop_is_reported_once_and_scanning_ends(tmp_path):
    write_class(tmp_path / "a" / "deep", 3)
    write_class(tmp_path / "b", 3)
    os.symlink(tmp_path / "a", tmp_path / "a" / "deep" / "up")
    os.symlink(tmp_path, tmp_path / "b" / "root")
    dataset = scan_dataset([tmp_path])
    assert dataset.counts == {"a": 3, "b": 3}
    loops = [s for s in dataset.skipped if s.reason.startswith("symlink loop")]
    assert sorted(os.path.basename(s.path) for s in loops) == ["root", "up"]


def test_symlinked_folders_are_followed_but_never_scanned_twice(tmp_path):
    outside = tmp_path / "outside"
    write_class(outside, 2, seed=1)
    root = tmp_path / "root"
    write_class(root / "a", 3)
    write_class(root / "b", 3, seed=2)
    os.symlink(outside, root / "a" / "more")
    os.symlink(root / "b", root / "a" / "b_again")
    dataset = scan_dataset([root])
    assert dataset.counts == {"a": 5, "b": 3}
    assert reasons(dataset)["b_again"] == "links to another class folder"


def test_unreadable_folder_is_reported(tmp_path, monkeypatch):
    write_class(tmp_path / "a", 2)
    write_class(tmp_path / "b" / "locked", 2)
    locked = str(tmp_path / "b" / "locked")
    real_scandir = os.scandir

    def guarded_scandir(path):
        # Tests run as root, where chmod 000 does not stop listing a folder.
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", guarded_scandir)
    dataset = scan_dataset([tmp_path])
    assert reasons(dataset)["locked"] == "cannot read folder: permission denied"
    assert dataset.counts == {"a": 2}
    assert dataset.empty_classes == ("b",)


def test_class_folders_layout(image_root):
    (image_root / "README.txt").write_text("about these images")
    write_class(image_root / "circles" / "nested" / "deeper", 2, seed=5)
    dataset = scan_dataset([image_root])
    assert dataset.layout == "class-folders"
    assert dataset.classes == ("circles", "squares", "stripes")
    assert dataset.counts == {"circles": 14, "squares": 12, "stripes": 12}
    assert reasons(dataset) == {"README.txt": "not inside a class folder"}
    assert dataset.class_folders["squares"] == (str(image_root / "squares"),)
    for item in (*dataset.train, *dataset.val):
        assert Path(item.path).relative_to(image_root).parts[0] == dataset.classes[item.label]
    assert dataset.test == ()
    dataset.require_trainable()


def test_split_folders_layout_uses_the_given_split(tmp_path):
    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        for seed, name in enumerate(("cats", "dogs")):
            write_class(tmp_path / split / name, count, seed=seed + 10 * count)
    write_class(tmp_path / "extra", 2)
    (tmp_path / "train" / "loose.png").write_bytes((tmp_path / "extra" / "img_000.png").read_bytes())
    dataset = scan_dataset([tmp_path], val_fraction=0.5)
    assert dataset.layout == "split-folders"
    assert dataset.classes == ("cats", "dogs")
    for items, split, count in ((dataset.train, "train", 12), (dataset.val, "val", 4), (dataset.test, "test", 6)):
        assert len(items) == count
        assert all(Path(item.path).relative_to(tmp_path).parts[0] == split for item in items)
    assert dataset.counts == {"cats": 11, "dogs": 11}
    assert dataset.class_folders["cats"] == tuple(str(tmp_path / s / "cats") for s in ("train", "val", "test"))
    found = reasons(dataset)
    assert found["extra"] == "not a train/, val/ or test/ folder"
    assert found["loose.png"] == "not inside a class folder"


def test_split_folders_without_val_draw_validation_from_train(tmp_path):
    write_class(tmp_path / "Train" / "a", 10)
    write_class(tmp_path / "Train" / "b", 10, seed=1)
    write_class(tmp_path / "Test" / "a", 2, seed=2)
    write_class(tmp_path / "Test" / "b", 2, seed=3)
    events = []
    dataset = scan_dataset([tmp_path], on_event=events.append)
    assert dataset.layout == "split-folders"
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (16, 4, 4)
    assert all("Train" in item.path for item in dataset.val)
    assert any(isinstance(e, Message) and "drawn from train/" in e.text for e in events)


def test_several_folders_are_one_class_each(tmp_path):
    write_class(tmp_path / "one" / "cats", 3)
    write_class(tmp_path / "two" / "cats", 2, seed=1)
    write_class(tmp_path / "two" / "dogs", 4, seed=2)
    write_class(tmp_path / "two" / "dogs" / "puppies", 2, seed=3)
    folders = [tmp_path / "one" / "cats", tmp_path / "two" / "cats", str(tmp_path / "two" / "dogs")]
    dataset = scan_dataset(folders)
    assert dataset.layout == "folder-per-class"
    assert dataset.counts == {"cats": 5, "dogs": 6}
    assert dataset.class_folders["cats"] == (str(tmp_path / "one" / "cats"), str(tmp_path / "two" / "cats"))


def test_single_folder_of_images_is_one_class_and_cannot_train(tmp_path):
    write_class(tmp_path / "cats", 5)
    write_class(tmp_path / "cats" / "more", 2, seed=1)
    (tmp_path / "cats" / ".DS_Store").write_bytes(b"\0" * 8)
    dataset = scan_dataset([tmp_path / "cats"])
    assert dataset.layout == "folder-per-class"
    assert dataset.counts == {"cats": 7}
    assert dataset.skipped == (SkippedFile(str(tmp_path / "cats" / ".DS_Store"), "hidden file"),)
    with pytest.raises(DataError, match=r"at least 2 classes.*found 1 \('cats'\)"):
        dataset.require_trainable()


def test_empty_and_small_classes_are_named(tmp_path):
    write_class(tmp_path / "full", 6)
    write_class(tmp_path / "single", 1, seed=1)
    (tmp_path / "nothing").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"")
    dataset = scan_dataset([tmp_path])
    assert dataset.classes == ("full", "single")
    assert dataset.empty_classes == ("broken", "nothing")
    with pytest.raises(DataError) as caught:
        dataset.require_trainable()
    assert "'single' (1 image)" in str(caught.value)
    summary = dataset.to_summary()
    assert summary["trainable"] is False and summary["problems"]


def test_fewer_than_two_usable_classes_names_the_empty_ones(tmp_path):
    write_class(tmp_path / "cats", 4)
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "readme.txt").write_text("todo")
    with pytest.raises(DataError, match=r"found 1 \('cats'\).*'dogs'"):
        scan_dataset([tmp_path]).require_trainable()


def test_excluded_classes_are_left_out_and_listed(image_root):
    events = []
    dataset = scan_dataset([image_root], excluded_classes=("squares", "typo"), on_event=events.append)
    assert dataset.classes == ("circles", "stripes")
    assert dataset.excluded_classes == ("squares",)
    assert {item.label for item in dataset.train} == {0, 1}
    assert any(isinstance(e, Message) and "'typo'" in e.text for e in events)


def test_split_is_stratified(tmp_path):
    for seed, (name, count) in enumerate((("a", 10), ("b", 20), ("c", 5), ("d", 2), ("e", 1))):
        write_class(tmp_path / name, count, seed=seed)
    dataset = scan_dataset([tmp_path])
    val_counts = dataset.split_counts()["val"]
    assert val_counts == {"a": 2, "b": 4, "c": 1, "d": 1, "e": 0}
    assert len(dataset.train) + len(dataset.val) == 38


def test_split_is_deterministic_per_seed_and_survives_moving_the_folder(image_root, tmp_path):
    first = scan_dataset([image_root], seed=3)
    again = scan_dataset([image_root], seed=3)
    other = scan_dataset([image_root], seed=4)
    assert first == again
    assert names(first.val) != names(other.val)
    moved = shutil.copytree(image_root, tmp_path / "moved")
    assert names(scan_dataset([moved], seed=3).val) == names(first.val)


def test_identical_files_stay_on_one_side_and_are_reported(tmp_path):
    originals = write_class(tmp_path / "a", 10)
    write_class(tmp_path / "b", 10, seed=1)
    for n in range(3):
        shutil.copy(originals[0], tmp_path / "a" / f"copy_{n}.png")
    shutil.copy(originals[1], tmp_path / "b" / "cross_class.png")
    for seed in range(8):
        dataset = scan_dataset([tmp_path], seed=seed)
        assert sorted(len(group) for group in dataset.duplicates) == [2, 4]
        val_paths = {item.path for item in dataset.val}
        for group in dataset.duplicates:
            assert len({path in val_paths for path in group}) == 1
        assert dataset.split_counts()["val"]["b"] >= 1


def test_same_size_files_need_identical_bytes_to_be_duplicates(tmp_path):
    pixels = np.zeros((200, 200, 3), np.uint8)  # a BMP over the 64 KiB partial hash
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    Image.fromarray(pixels).save(tmp_path / "a" / "one.bmp")
    Image.fromarray(pixels).save(tmp_path / "b" / "same.bmp")
    pixels[0, 0] = 255  # BMP rows are stored bottom-up: the change is at the end of the file
    Image.fromarray(pixels).save(tmp_path / "a" / "differs_at_end.bmp")
    pixels[0, 0] = 0
    pixels[199, 0] = 255
    Image.fromarray(pixels).save(tmp_path / "b" / "differs_at_start.bmp")
    dataset = scan_dataset([tmp_path])
    assert dataset.duplicates == ((str(tmp_path / "a" / "one.bmp"), str(tmp_path / "b" / "same.bmp")),)


def test_scan_reports_progress_and_can_be_cancelled(image_root):
    events = []
    scan_dataset([image_root], on_event=events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and all(e.task == "scan" for e in progress)
    assert (progress[-1].done, progress[-1].total) == (36, 36)

    calls = []

    def stop_after_ten() -> bool:
        calls.append(1)
        return len(calls) > 10

    with pytest.raises(Cancelled):
        scan_dataset([image_root], should_stop=stop_after_ten)


def test_verify_reports_progress_renumbers_labels_and_can_be_cancelled(tmp_path):
    write_class(tmp_path / "a", 3)
    write_class(tmp_path / "b", 3, seed=1)
    (tmp_path / "aa_bad").mkdir()
    data = (tmp_path / "a" / "img_000.png").read_bytes()
    (tmp_path / "aa_bad" / "cut.png").write_bytes(data[: len(data) // 2])
    dataset = scan_dataset([tmp_path])
    assert dataset.classes == ("a", "aa_bad", "b")
    events = []
    verified = verify_dataset(dataset, on_event=events.append)
    assert verified.classes == ("a", "b")
    assert verified.empty_classes == ("aa_bad",)
    assert {item.label for item in (*verified.train, *verified.val)} == {0, 1}
    assert all(verified.classes[i.label] in i.path for i in (*verified.train, *verified.val))
    assert events[-1] == Progress("verify", 7, 7, "1 could not be read")
    assert verify_dataset(verified) is verified
    with pytest.raises(Cancelled):
        verify_dataset(dataset, should_stop=lambda: True)


def test_summary_is_json_ready(mixed_root):
    summary = json.loads(json.dumps(scan_dataset([mixed_root]).to_summary()))
    assert summary["layout"] == "class-folders"
    assert [c["name"] for c in summary["classes"]] == ["mixed", "plain"]
    assert summary["total_images"] == len(GOOD_IMAGES) + 1 + 4
    assert summary["skipped_by_reason"]["over the pixel limit"] == 2
    assert {"path", "reason"} == set(summary["skipped"][0])


def test_scan_data_spec_uses_the_recipe_settings(image_root):
    spec = DataSpec(folders=(str(image_root),), val_fraction=0.5, seed=1, excluded_classes=("stripes",))
    dataset = scan_data_spec(spec)
    assert dataset == scan_dataset([image_root], val_fraction=0.5, seed=1, excluded_classes=["stripes"])
    assert dataset.split_counts()["val"] == {"circles": 6, "squares": 6}


def test_dataset_built_by_hand_derives_class_folders(tmp_path):
    items = (ImageItem(str(tmp_path / "a" / "x.png"), 0, 10), ImageItem(str(tmp_path / "b" / "y.png"), 1, 10))
    dataset = Dataset(("a", "b"), items, (), (), (SkippedFile("z", "not an image"),), (), (), (), "class-folders")
    assert dataset.class_folders == {"a": (str(tmp_path / "a"),), "b": (str(tmp_path / "b"),)}
    with pytest.raises(DataError, match="no validation images"):
        dataset.require_trainable()


@pytest.mark.parametrize(
    "folders, message",
    [([], "No image folders"), (["missing"], "does not exist"), (["file.png"], "this is a file")],
)
def test_bad_folder_arguments_are_data_errors(tmp_path, monkeypatch, folders, message):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "file.png")
    with pytest.raises(DataError, match=message):
        scan_dataset(folders)


def test_val_fraction_outside_0_1_is_refused(image_root):
    with pytest.raises(DataError, match="val_fraction=1.5"):
        scan_dataset([image_root], val_fraction=1.5)
