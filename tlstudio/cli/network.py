"""Commands that look inside a network: ``inspect``, ``explain``, ``activations`` and ``compare-cuts``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from tlstudio.cli.common import (
    BASE_HELP,
    EXIT_OK,
    UsageError,
    base_spec,
    existing_folders,
    field_text,
    load_tensorflow,
    metric_text,
    positive_int,
    print_json,
    print_table,
    split_arguments,
)
from tlstudio.cli.progress import ProgressRenderer
from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.events import ShouldStop
from tlstudio.core.spec.text import counted
from tlstudio.core.spec.text import shape_text


def add_inspect(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "inspect",
        parents=[common],
        help="list a base model's cut tensors",
        description="List every tensor of a base model where a new head can be attached: "
        "name, layer type, output shape, parameters, receptive field and whether it can be cut there. "
        "The default cut tensor is marked with *.",
    )
    sub.add_argument("base", metavar="BASE", help=BASE_HELP)
    sub.add_argument(
        "--weights",
        default="none",
        metavar="imagenet|none|FILE",
        help="weights to load (default: none; the catalogue is the same with any weights)",
    )
    sub.add_argument(
        "--top",
        action="store_true",
        help="include VGG's fully-connected top (fc1, fc2, predictions)",
    )
    sub.add_argument(
        "--input-size",
        type=positive_int,
        metavar="N",
        help="input width and height (default 224)",
    )
    sub.add_argument(
        "--graph",
        action="store_true",
        help="also list the traced TensorFlow graph tensors of each layer",
    )
    sub.add_argument("--json", action="store_true", help="print a JSON list of tensors")
    sub.set_defaults(handler=_cmd_inspect)


def _cmd_inspect(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    spec = base_spec(args)
    load_tensorflow(args)
    from tlstudio.core.model import backbones, tensors, traced_names

    model = backbones.build_base(spec, on_event=progress, should_stop=should_stop)
    infos = tensors.catalogue(model)
    default_cut = tensors.default_cut_tensor(model)
    graph = traced_names.graph_tensors(model) if args.graph else {}
    if args.json:
        rows = []
        for info in infos:
            row = {**dataclasses.asdict(info), "default_cut": info.name == default_cut}
            if args.graph:
                row["graph_tensors"] = graph.get(info.layer, [])
            rows.append(row)
        print_json(rows)
        return EXIT_OK
    table = []
    for info in infos:
        field = field_text(info.receptive_field, info.jump)
        table.append(
            [
                ("* " if info.name == default_cut else "  ") + info.name,
                info.layer_type,
                shape_text(info.shape),
                f"{info.params:,}",
                field,
                "yes" if info.cuttable else f"no: {info.reason}",
            ]
        )
        if args.graph:
            table.extend(
                [
                    ["      " + name, "", "", "", "", ""]
                    for name in graph.get(info.layer, [])
                ]
            )
    print_table(
        ["  tensor", "type", "output shape", "params", "receptive field", "cuttable"],
        table,
    )
    print(
        f"\n{model.name}: {len(infos)} tensors, {model.count_params():,} parameters; "
        f"default cut tensor {default_cut}"
    )
    return EXIT_OK


def add_explain(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "explain",
        parents=[common],
        help="show which parts of an image made the model choose a class (Grad-CAM)",
        description="Grad-CAM: colour the regions of IMAGE that raise the score of a class (the predicted one "
        "by default), taken at the cut tensor or at any convolutional tensor of the base, and save the "
        "image with the heat map over it as a PNG.",
        epilog="Example: tlstudio explain RUN photo.jpg --tensor block4_conv3:0 --out cam.png",
    )
    sub.add_argument(
        "run",
        metavar="RUN",
        help="a run folder, or an export folder / .keras with labels.txt",
    )
    sub.add_argument("image", metavar="IMAGE", help="the image to explain")
    sub.add_argument(
        "--tensor",
        metavar="NAME",
        help="a spatial tensor of the base, e.g. block4_conv3:0 "
        "(default: the cut tensor)",
    )
    sub.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="the class to explain (default: the predicted)",
    )
    sub.add_argument(
        "--alpha",
        type=float,
        default=0.45,
        metavar="F",
        help="heat map opacity 0..1 (default 0.45)",
    )
    sub.add_argument(
        "--colormap",
        choices=("jet", "viridis"),
        default="jet",
        help="heat map colours (default jet)",
    )
    sub.add_argument(
        "--out", required=True, metavar="PNG", help="the PNG file to write"
    )
    sub.set_defaults(handler=_cmd_explain)


def _cmd_explain(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    image = _model_path_and_image(args)
    from tlstudio.core.use.gradcam import grad_cam, overlay, save_png
    from tlstudio.core.use.predict import load_predictor

    predictor = load_predictor(args.run)
    class_index = None
    if args.class_name is not None:
        if args.class_name not in predictor.classes:
            raise UsageError(
                f"--class must be one of the model's classes: {', '.join(predictor.classes)}; got {args.class_name!r}"
            )
        class_index = predictor.classes.index(args.class_name)
    result = grad_cam(
        predictor.model, image, tensor_name=args.tensor, class_index=class_index
    )
    path = save_png(
        overlay(image, result.heatmap, alpha=args.alpha, colormap=args.colormap),
        args.out,
    )
    predicted = int(result.probabilities.argmax())
    print(
        f"Grad-CAM of class {predictor.classes[result.class_index]} "
        f"({result.probabilities[result.class_index]:.1%}; predicted {predictor.classes[predicted]} "
        f"{result.probabilities[predicted]:.1%}) at {result.tensor} -> {path}"
    )
    return EXIT_OK


def add_activations(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "activations",
        parents=[common],
        help="save the feature maps of one tensor for an image as a grid",
        description="Run IMAGE through the model and save the feature maps of a tensor of the base as a grid of "
        "channels (each scaled to its own range; the most active ones when there are more than --max-channels).",
        epilog="Example: tlstudio activations RUN photo.jpg --tensor block2_conv2:0 --out maps.png",
    )
    sub.add_argument(
        "run",
        metavar="RUN",
        help="a run folder, or an export folder / .keras with labels.txt",
    )
    sub.add_argument("image", metavar="IMAGE", help="the image to look at")
    sub.add_argument(
        "--tensor",
        required=True,
        metavar="NAME",
        help="a spatial tensor of the base, e.g. block2_conv2:0",
    )
    sub.add_argument(
        "--max-channels",
        type=positive_int,
        default=64,
        metavar="N",
        help="channels shown (default 64)",
    )
    sub.add_argument(
        "--out", required=True, metavar="PNG", help="the PNG file to write"
    )
    sub.set_defaults(handler=_cmd_activations)


def _cmd_activations(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    image = _model_path_and_image(args)
    from tlstudio.core.use.activations import activations, channel_grid
    from tlstudio.core.use.gradcam import save_png
    from tlstudio.core.use.predict import load_predictor

    maps = activations(load_predictor(args.run).model, image, args.tensor)
    path = save_png(channel_grid(maps, max_channels=args.max_channels), args.out)
    height, width, channels = maps.shape
    shown = min(channels, args.max_channels)
    print(
        f"{args.tensor}: {channels} maps of {height}x{width} ({shown} shown) -> {path}"
    )
    return EXIT_OK


def _model_path_and_image(args: argparse.Namespace) -> Any:
    """Check the model path, then decode the image (a bad image is reported before TensorFlow loads)."""
    if not Path(args.run).exists():
        raise UserError(f"No run or model at {args.run!r}. Check the path.")
    from tlstudio.core.data.images import load_rgb

    image = load_rgb(args.image)
    load_tensorflow(args)
    return image


def add_compare_cuts(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "compare-cuts",
        parents=[common],
        help="compare cut tensors with a quick linear classifier on each",
        description="Before training, run the base once over the training and validation images, take the "
        "features of each cut tensor (averaged over positions) and fit a linear classifier on each. "
        "Higher validation accuracy means the head will have an easier job there.",
        epilog="Example: tlstudio compare-cuts --data photos/ --base vgg16 --cuts block3_pool:0,block4_pool:0,"
        "block5_pool:0",
    )
    sub.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="DIR",
        help="image folder(s), as for 'tlstudio data'",
    )
    sub.add_argument("--base", required=True, metavar="BASE", help=BASE_HELP)
    sub.add_argument(
        "--weights",
        default="imagenet",
        metavar="imagenet|none|FILE",
        help="base weights (default imagenet)",
    )
    sub.add_argument(
        "--top",
        action="store_true",
        help="include VGG's fully-connected top (to compare fc1, fc2)",
    )
    sub.add_argument(
        "--cuts",
        type=_tensor_list,
        metavar="T1,T2,...",
        help="cut tensors to compare (default: the last tensor of each block and the default cut, as in the app)",
    )
    sub.add_argument(
        "--input-size",
        type=positive_int,
        metavar="N",
        help="input width and height (default 224)",
    )
    split_arguments(sub, defaults=True)
    sub.add_argument(
        "--json", action="store_true", help="print one JSON object per cut, in a list"
    )
    sub.set_defaults(handler=_cmd_compare_cuts)


def _cmd_compare_cuts(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    from tlstudio.core.data.dataset import scan_dataset

    spec = base_spec(args)
    dataset = scan_dataset(
        existing_folders(args.data, "data"),
        val_fraction=args.val_fraction,
        seed=args.seed,
        on_event=progress,
        should_stop=should_stop,
    )
    load_tensorflow(args)
    from tlstudio.core.model import backbones
    from tlstudio.core.model.tensors import catalogue, default_cut_tensor
    from tlstudio.core.use.cut_comparison import compare_cuts, default_cuts

    base = backbones.build_base(spec, on_event=progress, should_stop=should_stop)
    size = base.inputs[0].shape[1] or spec.input_size
    results = compare_cuts(
        base,
        dataset,
        args.cuts or default_cuts(catalogue(base), default_cut_tensor(base)),
        int(size),
        backbones.preprocessing_mode(spec),
        on_event=progress,
        should_stop=should_stop,
    )
    progress.close()
    if args.json:
        print_json([dataclasses.asdict(r) for r in results])
        return EXIT_OK
    print_table(
        ["cut tensor", "features", "val accuracy", "train accuracy", "fit seconds"],
        [
            [
                r.tensor,
                r.feature_size,
                metric_text(r.val_accuracy),
                metric_text(r.train_accuracy),
                f"{r.seconds:.2f}",
            ]
            for r in results
        ],
        numeric={1, 2, 3, 4},
    )
    print(
        f"\n{len(dataset.train)} training and {len(dataset.val)} validation images, "
        f"{counted(len(dataset.classes), 'class')}"
    )
    return EXIT_OK


def _tensor_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected tensor names separated by commas, e.g. block3_pool:0; got {text!r}"
        )
    return names
