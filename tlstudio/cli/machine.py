"""Commands about this computer: ``weights``, ``cache``, ``devices`` and ``doctor``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from tlstudio.cli.common import (
    EXIT_OK,
    load_tensorflow,
    print_json,
    print_table,
    status_actions,
)
from tlstudio.cli.progress import ProgressRenderer
from tlstudio.core.spec.bases import DOWNLOADABLE_BASES, NAMED_BASES
from tlstudio.core.spec.events import ShouldStop
from tlstudio.core.spec.text import counted


def add_weights(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "weights",
        parents=[common],
        help="show, import or download pretrained ImageNet weights",
        description="ImageNet weights for VGG16/VGG19 live in Keras' cache (~/.keras/models). "
        "'status' shows what is there, 'import FILE' copies a downloaded .h5 in after checking its hash, "
        "'download BASE' fetches one. EfficientNet-Lite0's weights come with TL Studio.",
    )
    actions = status_actions(
        sub, common, "list the weights files and where they are", _cmd_weights_status
    )
    import_ = actions.add_parser(
        "import", parents=[common], help="copy a downloaded weights file into the cache"
    )
    import_.add_argument(
        "file", metavar="FILE", help="an official Keras VGG16/VGG19 .h5 weights file"
    )
    import_.set_defaults(handler=_cmd_weights_import)
    download = actions.add_parser(
        "download", parents=[common], help="download the weights of a base model"
    )
    download.add_argument(
        "base", metavar="BASE", choices=NAMED_BASES, help=", ".join(NAMED_BASES)
    )
    download.add_argument(
        "--top", action="store_true", help="the weights with the fully-connected top"
    )
    download.add_argument(
        "--mirror",
        metavar="URL",
        help="fetch from URL/FILENAME instead of the official site",
    )
    download.set_defaults(handler=_cmd_weights_download)


def _cmd_weights_status(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    from tlstudio.core.model import backbones

    entries = []
    for base in DOWNLOADABLE_BASES:
        for include_top in (False, True):
            wf = backbones.weights_file(base, include_top)
            state, path = backbones.weights_status(base, include_top)
            entries.append(
                {
                    "base": base,
                    "include_top": include_top,
                    "status": state,
                    "path": str(path) if path else None,
                    "filename": wf.filename,
                    "size_bytes": wf.size_bytes,
                    "url": wf.url,
                }
            )
    lite0 = next(name for name in NAMED_BASES if name not in DOWNLOADABLE_BASES)
    state, path = backbones.weights_status(lite0, False)
    entries.append(
        {
            "base": lite0,
            "include_top": None,
            "status": state,
            "path": str(path) if path else None,
            "filename": None,
            "size_bytes": None,
            "url": None,
        }
    )
    if args.json:
        print_json(entries)
        return EXIT_OK
    rows = []
    for entry in entries:
        top = (
            "-"
            if entry["include_top"] is None
            else ("with top" if entry["include_top"] else "no top")
        )
        size = (
            "" if entry["size_bytes"] is None else f"{entry['size_bytes'] / 1e6:.0f} MB"
        )
        rows.append(
            [
                entry["base"],
                top,
                entry["status"],
                size,
                entry["path"] or entry["url"] or "",
            ]
        )
    print_table(
        ["base", "variant", "status", "size", "file (or where to download it)"], rows
    )
    if any(entry["status"] == "missing" for entry in entries):
        print(
            "\nGet missing files with 'tlstudio weights download BASE [--top]', or download them elsewhere "
            "and run 'tlstudio weights import FILE'."
        )
    return EXIT_OK


def _cmd_weights_import(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    from tlstudio.core.model import backbones

    path = backbones.import_weights(args.file)
    print(f"Imported {args.file} -> {path}")
    return EXIT_OK


def _cmd_weights_download(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    if args.base not in DOWNLOADABLE_BASES:
        print(
            f"{args.base}'s ImageNet weights come with TL Studio; there is nothing to download."
        )
        return EXIT_OK
    from tlstudio.core.model import backbones

    path = backbones.resolve_weights(
        backbones.weights_file(args.base, args.top),
        mirror=args.mirror,
        on_event=progress,
        should_stop=should_stop,
    )
    progress.close()
    print(f"{args.base} ({'with top' if args.top else 'no top'}) weights: {path}")
    return EXIT_OK


def add_cache(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "cache",
        parents=[common],
        help="show or clear the feature cache",
        description="Training a head on a frozen base keeps each image's features on disk, so later runs with "
        "another head or other settings skip the base. 'status' lists what is kept; 'clear' deletes it "
        "(it is rebuilt as needed). The size limit is TLSTUDIO_FEATURE_CACHE_MB (default 2048; 0 turns it off).",
    )
    actions = status_actions(
        sub, common, "list the cached feature sets and their size", _cmd_cache_status
    )
    clear = actions.add_parser(
        "clear", parents=[common], help="delete every cached feature"
    )
    clear.set_defaults(handler=_cmd_cache_clear)


def _cmd_cache_status(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    from tlstudio.core.data.feature_cache import FeatureCache

    state = FeatureCache().status()
    if args.json:
        print_json(
            {
                "path": str(state.path),
                "entries": state.entries,
                "bytes": state.bytes,
                "limit_bytes": state.limit_bytes,
                "sets": [dataclasses.asdict(s) for s in state.sets],
            }
        )
        return EXIT_OK
    if state.sets:
        print_table(
            ["feature set", "images", "size"],
            [
                [s.description, s.images, f"{s.bytes / 2**20:.1f} MB"]
                for s in state.sets
            ],
            numeric={1, 2},
        )
        print()
    print(
        f"{counted(state.entries, 'image feature')} in {counted(len(state.sets), 'set')}, {state.bytes / 2**20:.1f} MB of "
        f"{state.limit_bytes / 2**20:.0f} MB, in {state.path}"
    )
    return EXIT_OK


def _cmd_cache_clear(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    from tlstudio.core.data.feature_cache import FeatureCache

    cache = FeatureCache()
    freed = cache.clear()
    print(f"Cleared the feature cache in {cache.root}: {freed / 2**20:.1f} MB freed.")
    return EXIT_OK


def add_devices(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "devices", parents=[common], help="list the devices TensorFlow can train on"
    )
    sub.add_argument("--json", action="store_true", help="print the devices as JSON")
    sub.set_defaults(handler=_cmd_devices)


def _cmd_devices(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    load_tensorflow(args)
    from tlstudio.core.train import devices

    found = devices.list_devices()
    badge = devices.device_badge()
    reason = devices.cpu_only_reason()
    if args.json:
        print_json(
            {
                "devices": [dataclasses.asdict(d) for d in found],
                "badge": badge,
                "cpu_only_reason": reason,
            }
        )
        return EXIT_OK
    rows = [
        [
            d.name,
            d.kind,
            "-" if d.memory_bytes is None else f"{d.memory_bytes / 2**30:.1f} GiB",
            d.compute_capability or "-",
        ]
        for d in found
    ]
    print_table(["device", "kind", "memory", "compute capability"], rows)
    print(f"\n{badge}")
    if reason and reason not in badge:
        print(f"CPU only: {reason}")
    return EXIT_OK


def add_doctor(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "doctor",
        parents=[common],
        help="explain why TensorFlow does or does not use the GPU",
        description="Report TensorFlow's build (CUDA and cuDNN versions), the devices it sees, the NVIDIA "
        "driver and CUDA_VISIBLE_DEVICES, and the likely reason when no GPU is used.",
    )
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    load_tensorflow(args)
    from tlstudio.core.train.doctor import diagnose

    report = diagnose()
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.text())
    return EXIT_OK
