"""``tlstudio data``: scan class folders and report what training would see."""

from __future__ import annotations

import argparse
from typing import Any

from tlstudio.cli.common import EXIT_OK, print_json, print_table, split_arguments
from tlstudio.core.data.balance import imbalance_warning
from tlstudio.cli.progress import ProgressRenderer
from tlstudio.core.spec.events import ShouldStop
from tlstudio.core.spec.text import counted


def add_data(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "data",
        parents=[common],
        help="scan image folders and report what can be trained on",
        description="Scan image folders: one folder with a sub-folder per class, one with train/ and val/ "
        "(optional test/) sub-folders, or several folders that are each one class. Reports classes with "
        "their image counts, the validation split, skipped files with reasons, empty classes and duplicates.",
    )
    sub.add_argument("folders", nargs="+", metavar="DIR", help="image folder(s)")
    split_arguments(sub, defaults=True)
    sub.add_argument(
        "--exclude", nargs="+", default=(), metavar="CLASS", help="classes to leave out"
    )
    sub.add_argument(
        "--verify",
        action="store_true",
        help="also decode every image fully (slower; finds corrupt pixel data)",
    )
    sub.add_argument(
        "--json", action="store_true", help="print the scan report as JSON"
    )
    sub.set_defaults(handler=_cmd_data)


def _cmd_data(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    from tlstudio.core.data.dataset import scan_dataset
    from tlstudio.core.data.verify import verify_dataset

    dataset = scan_dataset(
        args.folders,
        val_fraction=args.val_fraction,
        seed=args.seed,
        excluded_classes=tuple(args.exclude),
        on_event=progress,
        should_stop=should_stop,
    )
    if args.verify:
        dataset = verify_dataset(dataset, on_event=progress, should_stop=should_stop)
    progress.close()
    if args.json:
        print_json({**dataset.to_summary(), "imbalance_warning": imbalance_warning(dataset.counts)})
    else:
        _print_data_report(dataset)
    return EXIT_OK


def _print_data_report(dataset: Any) -> None:
    counts = dataset.counts
    splits = dataset.split_counts()
    show_test = bool(dataset.test)
    headers = ["class", "images", "train", "val"] + (["test"] if show_test else [])
    rows = [
        [name, counts[name], splits["train"][name], splits["val"][name]]
        + ([splits["test"][name]] if show_test else [])
        for name in dataset.classes
    ]
    split_text = f"{len(dataset.train)} train, {len(dataset.val)} val"
    if show_test:
        split_text += f", {len(dataset.test)} test"
    print(
        f"Layout: {dataset.layout}. {counted(len(dataset.classes), 'class')}, "
        f"{counted(sum(counts.values()), 'usable image')} ({split_text})"
    )
    if rows:
        print()
        print_table(headers, rows, numeric=set(range(1, len(headers))))
    if dataset.empty_classes:
        print(f"\nEmpty classes (no usable images): {', '.join(dataset.empty_classes)}")
    if dataset.excluded_classes:
        print(f"Excluded classes: {', '.join(dataset.excluded_classes)}")
    if dataset.skipped:
        print(
            f"\nSkipped {counted(len(dataset.skipped), 'file')}:"
        )
        for skipped in dataset.skipped:
            print(f"  {skipped.path}: {skipped.reason}")
    if dataset.duplicates:
        print(
            f"\n{counted(len(dataset.duplicates), 'group')} of byte-identical files, each kept on one side of the split:"
        )
        for group in dataset.duplicates:
            print("  " + " = ".join(group))
    imbalance = imbalance_warning(dataset.counts)
    if imbalance:
        print(f"\nWarning: {imbalance}")
    for problem in dataset.problems():
        print(f"\nNot trainable yet: {problem}")
