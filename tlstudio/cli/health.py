"""Commands that study the data and the recipe on cached features: ``check``, ``tune``, ``lr-find`` and ``map``."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from tlstudio.cli.common import (
    BASE_HELP,
    EXIT_OK,
    UsageError,
    base_fields,
    existing_folders,
    hidden_units,
    load_tensorflow,
    positive_int,
    print_json,
    print_table,
    weights_choice,
)
from tlstudio.cli.progress import ProgressRenderer
from tlstudio.core.spec.events import ShouldStop
from tlstudio.core.spec.text import counted

DEFAULT_BASE = "efficientnet-lite0"


def add_check(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "check",
        parents=[common],
        help="find likely mislabelled images, near-duplicates and outliers",
        description="Check the data on the cut features of the base: k-fold linear classifiers give every image "
        "an out-of-fold prediction; confident learning (cleanlab) ranks the images whose label looks wrong, "
        "feature similarity finds near-duplicates and neighbour distances find outliers. Nothing is changed.",
        epilog="Example: tlstudio check photos/ --base efficientnet-lite0 --json",
    )
    _data_arguments(sub, positional=True)
    sub.add_argument("--folds", type=positive_int, default=5, metavar="K", help="folds (default 5)")
    sub.add_argument("--json", action="store_true", help="print the findings as JSON")
    sub.set_defaults(handler=_cmd_check)


def add_tune(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "tune",
        parents=[common],
        help="search for the best cut, head and learning rate within a time budget",
        description="Successive halving over cut tensors, hidden units, dropout, batch norm, learning rate and "
        "epochs, each candidate a head trained on cached features and scored on the validation images. "
        "Your recipe (or the default one) is always the first candidate.",
        epilog="Example: tlstudio tune --data photos/ --base efficientnet-lite0 --budget 120 "
        "--save-project best.tlsproj",
    )
    _data_arguments(sub, positional=False)
    sub.add_argument("--budget", type=float, default=300.0, metavar="SECONDS", help="time budget (default 300)")
    sub.add_argument("--candidates", type=positive_int, default=27, metavar="N",
                     help="candidates in the first round (default 27)")
    sub.add_argument("--save-project", metavar="FILE", help="save the winning recipe as a project file")
    sub.add_argument("--json", action="store_true", help="print the leaderboard as JSON")
    sub.set_defaults(handler=_cmd_tune)


def add_lr_find(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "lr-find",
        parents=[common],
        help="sweep the learning rate of the head and suggest one",
        description="Train the head on cached features for a few hundred batches while the learning rate grows "
        "from 1e-7 to 10, and suggest the rate where the smoothed loss falls best (fastai's valley).",
        epilog="Example: tlstudio lr-find --data photos/ --base efficientnet-lite0",
    )
    _data_arguments(sub, positional=False)
    sub.add_argument("--hidden", type=hidden_units, metavar="N,N", help="hidden layer sizes of the head")
    sub.add_argument("--dropout", type=float, metavar="F", help="dropout of the head")
    sub.add_argument("--steps", type=positive_int, default=100, metavar="N", help="sweep steps (default 100)")
    sub.add_argument("--json", action="store_true", help="print the curve and suggestion as JSON")
    sub.set_defaults(handler=_cmd_lr_find)


def add_map(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "map",
        parents=[common],
        help="draw a 2-D map of the images' cut features as a PNG",
        description="Project the cut features to 2-D (PCA, then t-SNE) and draw each image's thumbnail framed "
        "in its class colour; with --health, likely mislabelled images, outliers and near-duplicates are ringed.",
        epilog="Example: tlstudio map photos/ --base efficientnet-lite0 --out map.png --health",
    )
    _data_arguments(sub, positional=True)
    sub.add_argument("--out", required=True, metavar="PNG", help="the picture to write")
    sub.add_argument("--method", choices=("tsne", "pca"), default="tsne", help="projection (default tsne)")
    sub.add_argument("--health", action="store_true", help="also run the check and ring its findings")
    sub.add_argument("--size", type=positive_int, default=1200, metavar="PX", help="width in pixels (default 1200)")
    sub.add_argument("--json", action="store_true", help="also print the points as JSON")
    sub.set_defaults(handler=_cmd_map)


def _data_arguments(sub: argparse.ArgumentParser, positional: bool) -> None:
    if positional:
        sub.add_argument("dirs", nargs="*", metavar="DIR", help="image folder(s), as for 'tlstudio data'")
    else:
        sub.set_defaults(dirs=[])
    sub.add_argument("--data", nargs="+", metavar="DIR", help="image folder(s)")
    sub.add_argument("--project", metavar="FILE", help="take data (with its exclusions and relabels), base, cut and "
                     "head from a project file; flags override it")
    sub.add_argument("--base", metavar="BASE", help=f"{BASE_HELP} (default {DEFAULT_BASE})")
    sub.add_argument("--weights", metavar="imagenet|none|FILE", help="base weights (default imagenet)")
    sub.add_argument("--cut", metavar="T", help="cut tensor, e.g. block4_pool:0 (default: the base's)")
    sub.add_argument("--input-size", type=positive_int, metavar="N", help="input width and height (default 224)")
    sub.add_argument("--val-fraction", type=float, metavar="F", help="validation share (default 0.2)")
    sub.add_argument("--seed", type=int, metavar="N", help="seed of the split and the folds (default 0)")


def recipe_from_args(args: argparse.Namespace) -> Any:
    """The recipe a command studies: the project's (or the defaults with ``DEFAULT_BASE``) with the flags on top."""
    from tlstudio.core.spec.recipe import BaseSpec, Recipe, load_project

    recipe = load_project(args.project) if args.project else Recipe(base=BaseSpec(name=DEFAULT_BASE))
    folders = [*args.dirs, *(args.data or [])]
    data: dict[str, Any] = {}
    if folders:
        data["folders"] = tuple(os.path.abspath(f) for f in existing_folders(folders, "data"))
    if args.val_fraction is not None:
        data["val_fraction"] = args.val_fraction
    if args.seed is not None:
        data["seed"] = args.seed
    base: dict[str, Any] = base_fields(args.base) if args.base else {}
    if args.weights is not None:
        base["weights"] = weights_choice(args.weights)
    if args.input_size is not None:
        base["input_size"] = args.input_size
    recipe = recipe.replace(
        data=dataclasses.replace(recipe.data, **data),
        base=dataclasses.replace(recipe.base, **base),
        cut_tensor=args.cut or recipe.cut_tensor,
    )
    if not recipe.data.folders:
        raise UsageError("no image folders given; name them (DIR... or --data DIR...) or give --project FILE")
    return recipe


def _prepare(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> tuple[Any, Any, Any]:
    """Recipe, scanned dataset (corrections applied) and built base."""
    from tlstudio.core.data.dataset import scan_data_spec

    recipe = recipe_from_args(args)
    dataset = scan_data_spec(recipe.data, on_event=progress, should_stop=should_stop)
    load_tensorflow(args)
    from tlstudio.core.model import backbones

    base = backbones.build_base(recipe.base, on_event=progress, should_stop=should_stop)
    return recipe, dataset, base


def _base_label(recipe: Any) -> str:
    """The base's name in feature-cache keys, as training writes it (so training and these commands share features)."""
    return recipe.base.model_file if recipe.base.name == "file" and recipe.base.model_file else recipe.base.name


def _input_size(base: Any, recipe: Any) -> int:
    return int(base.inputs[0].shape[1] or recipe.base.input_size)


def _cmd_check(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    recipe, dataset, base = _prepare(args, progress, should_stop)
    from tlstudio.core.model.backbones import preprocessing_mode
    from tlstudio.core.use.health import check_dataset

    report = check_dataset(
        base, dataset, recipe.cut_tensor, _input_size(base, recipe), preprocessing_mode(recipe.base),
        folds=args.folds, seed=recipe.data.seed, on_event=progress, should_stop=should_stop,
        base_label=_base_label(recipe),
    )
    progress.close()
    if args.json:
        print_json(report.to_dict())
        return EXIT_OK
    print(f"Likely mislabelled ({len(report.mislabeled)}):")
    print_table(["score", "given", "suggested", "image"],
                [[f"{m.score:.3f}", m.given, m.suggested, m.path] for m in report.mislabeled], numeric={0})
    print(f"\nNear-duplicates ({len(report.near_duplicates)}):")
    print_table(
        ["similarity", "note", "images"],
        [[f"{d.similarity:.3f}", _duplicate_note(d), " | ".join(d.paths)] for d in report.near_duplicates],
        numeric={0},
    )
    print(f"\nOutliers ({len(report.outliers)}):")
    print_table(["score", "image"], [[f"{o.score:.3f}", o.path] for o in report.outliers], numeric={0})
    return EXIT_OK


def _duplicate_note(pair: Any) -> str:
    notes = [note for flag, note in ((pair.across_splits, "across splits"), (pair.across_classes, "different classes"))
             if flag]
    return ", ".join(notes) or "-"


def _cmd_tune(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    if args.budget <= 0:
        raise UsageError(f"--budget must be positive seconds; got {args.budget!r}")
    recipe, dataset, base = _prepare(args, progress, should_stop)
    dataset.require_trainable()
    from tlstudio.core.use.tune import tune_recipe

    result = tune_recipe(recipe, base, dataset, args.budget, args.candidates, on_event=progress,
                         should_stop=should_stop, base_label=_base_label(recipe))
    progress.close()
    saved = None
    if args.save_project and result.best is not None:
        from tlstudio.core.spec.recipe import save_project

        saved = save_project(result.recipe(recipe), args.save_project)
    if args.json:
        print_json({"leaderboard": [t.to_dict() for t in result.leaderboard], "stopped": result.stopped,
                    "out_of_budget": result.out_of_budget, "seconds": result.seconds,
                    "project": str(saved) if saved else None})
        return EXIT_OK
    print_table(
        ["rank", "recipe", "val accuracy", "val loss", "epochs", "seconds"],
        [[i + 1, t.candidate.summary(), f"{t.val_accuracy:.3f}", f"{t.val_loss:.3f}", t.epochs, f"{t.seconds:.1f}"]
         for i, t in enumerate(result.leaderboard)],
        numeric={0, 2, 3, 4, 5},
    )
    ending = "stopped" if result.stopped else "budget spent" if result.out_of_budget else "finished"
    print(f"\n{len(result.leaderboard)} candidates in {result.seconds:.0f} s ({ending}).")
    if saved:
        print(f"Saved the best recipe to {saved}")
    return EXIT_OK


def _cmd_lr_find(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    recipe, dataset, base = _prepare(args, progress, should_stop)
    dataset.require_trainable()
    import numpy as np

    from tlstudio.core.model.backbones import preprocessing_mode
    from tlstudio.core.use.health import cut_features
    from tlstudio.core.use.lr_find import find_learning_rate

    head = recipe.head
    if args.hidden is not None:
        head = dataclasses.replace(head, hidden_units=args.hidden)
    if args.dropout is not None:
        head = dataclasses.replace(head, dropout=args.dropout)
    items = list(dataset.train)
    _, features = cut_features(base, items, recipe.cut_tensor, _input_size(base, recipe),
                               preprocessing_mode(recipe.base), progress, should_stop, _base_label(recipe))
    curve = find_learning_rate(
        features, np.asarray([i.label for i in items]), len(dataset.classes), head, recipe.training.optimizer,
        recipe.training.batch_size, steps=args.steps, seed=recipe.data.seed, on_event=progress,
        should_stop=should_stop,
    )
    progress.close()
    if args.json:
        print_json(curve.to_dict())
        return EXIT_OK
    every = max(1, len(curve.rates) // 12)
    print_table(["learning rate", "smoothed loss"],
                [[f"{r:.1e}", f"{l:.4f}"] for r, l in list(zip(curve.rates, curve.smoothed))[::every]],
                numeric={0, 1})
    print(f"\nSuggested learning rate: {curve.suggestion:.1e} (valley; steepest descent at {curve.steepest:.1e})")
    return EXIT_OK


def _cmd_map(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    out = os.path.abspath(args.out)
    if not os.path.isdir(os.path.dirname(out)):
        raise UsageError(f"--out must be in an existing folder; no folder {os.path.dirname(out)!r}")
    recipe, dataset, base = _prepare(args, progress, should_stop)
    from tlstudio.core.model.backbones import preprocessing_mode
    from tlstudio.core.use import feature_map, health

    items, splits = health.dataset_items(dataset)
    size, mode = _input_size(base, recipe), preprocessing_mode(recipe.base)
    _, features = health.cut_features(base, items, recipe.cut_tensor, size, mode, progress, should_stop,
                                      _base_label(recipe))
    flags = {}
    if args.health:
        report = health.check_dataset(base, dataset, recipe.cut_tensor, size, mode, seed=recipe.data.seed,
                                      on_event=progress, should_stop=should_stop, base_label=_base_label(recipe))
        flags = feature_map.health_flags(report)
    fmap = feature_map.build_map(features, items, splits, dataset.classes, args.method, recipe.data.seed, flags,
                                 progress)
    path = feature_map.render_png(fmap, out, size=args.size)
    progress.close()
    if args.json:
        print_json(fmap.to_dict())
    else:
        print(f"Wrote the map of {counted(len(items), 'image')} to {path}")
    return EXIT_OK
