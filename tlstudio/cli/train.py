"""``tlstudio train``: train a recipe from a project file or from options."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from tlstudio.cli.common import (
    BASE_HELP,
    EXIT_CANCELLED,
    EXIT_OK,
    UsageError,
    base_fields,
    existing_folders,
    hidden_units,
    load_tensorflow,
    positive_int,
    print_json,
    print_table,
    split_arguments,
    weights_choice,
)
from tlstudio.cli.progress import ProgressRenderer
from tlstudio.core.spec.events import ShouldStop
from tlstudio.core.spec.recipe import OPTIMIZERS, POOLINGS
from tlstudio.core.spec.text import counted

_TRAIN_OVERRIDES = {
    "val_fraction": ("data", "val_fraction"),
    "seed": ("data", "seed"),
    "exclude": ("data", "excluded_classes"),
    "top": ("base", "include_top"),
    "input_size": ("base", "input_size"),
    "pooling": ("head", "pooling"),
    "hidden": ("head", "hidden_units"),
    "dropout": ("head", "dropout"),
    "batch_norm": ("head", "batch_norm"),
    "bn_epsilon": ("head", "bn_epsilon"),
    "bn_momentum": ("head", "bn_momentum"),
    "epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "lr": ("training", "learning_rate"),
    "optimizer": ("training", "optimizer"),
    "momentum": ("training", "momentum"),
    "cosine_decay": ("training", "cosine_decay"),
    "patience": ("training", "early_stopping_patience"),
    "class_weights": ("training", "class_weights"),
    "augment": ("training", "augmentation"),
    "fine_tune_epochs": ("training", "fine_tune_epochs"),
    "fine_tune_layers": ("training", "fine_tune_layers"),
    "fine_tune_from": ("training", "fine_tune_from"),
    "fine_tune_lr_factor": ("training", "fine_tune_lr_factor"),
    "finalize_bn": ("training", "finalize_batch_norm"),
}


def add_train(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "train",
        parents=[common],
        help="train a classifier on image folders",
        description="Train a new head on a base model's cut tensor, optionally fine-tune, and save a run folder "
        "(recipe, history, best model, log). With --project, the project file's settings are used and any "
        "flag given overrides them.",
        epilog="Example: tlstudio train --data photos/ --base efficientnet-lite0 --epochs 5 --save-project my.json",
    )
    source = sub.add_argument_group("recipe")
    source.add_argument(
        "--project",
        metavar="FILE",
        help="a project file saved by the app or with --save-project",
    )
    source.add_argument(
        "--save-project",
        metavar="FILE",
        help="write the recipe built from the flags to FILE",
    )
    source.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the interrupted or stopped run in the folder RUN with its own recipe "
        "(other recipe options are not allowed)",
    )
    source.add_argument(
        "--dry-run",
        action="store_true",
        help="check the recipe (and save it) without training",
    )
    data = sub.add_argument_group("data")
    data.add_argument(
        "--data",
        nargs="+",
        metavar="DIR",
        help="image folder(s), as for 'tlstudio data'",
    )
    split_arguments(data, defaults=False)
    data.add_argument(
        "--exclude", nargs="+", metavar="CLASS", help="classes to leave out"
    )
    base = sub.add_argument_group("base model")
    base.add_argument("--base", metavar="BASE", help=BASE_HELP)
    base.add_argument(
        "--weights",
        metavar="imagenet|none|FILE",
        help="base weights (default imagenet)",
    )
    base.add_argument(
        "--top",
        action=argparse.BooleanOptionalAction,
        help="keep VGG's fully-connected top",
    )
    base.add_argument(
        "--input-size",
        type=positive_int,
        metavar="N",
        help="input width and height (default 224)",
    )
    base.add_argument(
        "--cut",
        metavar="TENSOR",
        help="cut tensor, e.g. block4_pool:0 (default: the base's feature output, block5_pool:0 for VGG, fc2:0 with its top)",
    )
    head = sub.add_argument_group("head")
    head.add_argument(
        "--pooling",
        choices=POOLINGS,
        help="how a 4-D cut tensor is flattened (default avg)",
    )
    head.add_argument(
        "--hidden",
        type=hidden_units,
        metavar="N[,N...]",
        help="hidden dense layer sizes, one per layer, e.g. 256,128 or '256 128'",
    )
    head.add_argument(
        "--dropout",
        type=float,
        metavar="F",
        help="dropout before the last layer (default 0)",
    )
    head.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        help="batch norm in the head (default on)",
    )
    head.add_argument(
        "--bn-epsilon",
        type=float,
        metavar="X",
        help="batch-norm epsilon (default 1e-3)",
    )
    head.add_argument(
        "--bn-momentum",
        type=float,
        metavar="X",
        help="batch-norm momentum (default 0.99)",
    )
    training = sub.add_argument_group("training")
    training.add_argument(
        "--epochs", type=int, metavar="N", help="epochs of head training (default 10)"
    )
    training.add_argument(
        "--batch-size", type=int, metavar="N", help="images per batch (default 32)"
    )
    training.add_argument(
        "--lr", type=float, metavar="X", help="learning rate (default 1e-3)"
    )
    training.add_argument(
        "--optimizer", choices=OPTIMIZERS, help="optimizer (default adam)"
    )
    training.add_argument(
        "--momentum", type=float, metavar="X", help="SGD momentum (default 0.9)"
    )
    training.add_argument(
        "--cosine-decay",
        action=argparse.BooleanOptionalAction,
        help="cosine learning-rate decay",
    )
    training.add_argument(
        "--patience",
        type=int,
        metavar="N",
        help="early-stopping patience in epochs, 0 = off",
    )
    training.add_argument(
        "--class-weights",
        action=argparse.BooleanOptionalAction,
        help="weigh rare classes up",
    )
    training.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="flip, rotate, zoom, contrast",
    )
    training.add_argument(
        "--fine-tune-epochs",
        type=int,
        metavar="N",
        help="epochs of fine-tuning after (default 0)",
    )
    training.add_argument(
        "--fine-tune-layers",
        type=int,
        metavar="N",
        help="unfreeze the last N base layers",
    )
    training.add_argument(
        "--fine-tune-from", metavar="LAYER", help="unfreeze the base from LAYER on"
    )
    training.add_argument(
        "--fine-tune-lr-factor",
        type=float,
        metavar="X",
        help="fine-tune LR = lr * X (default 0.1)",
    )
    training.add_argument(
        "--finalize-bn",
        action=argparse.BooleanOptionalAction,
        help="recompute the head's batch-norm statistics over the whole training set after training",
    )
    output = sub.add_argument_group("output")
    output.add_argument(
        "--out",
        metavar="DIR",
        help="the run folder to write, new or empty: a folder holding other files is refused, never "
        "overwritten (default: a new folder under the user data folder)",
    )
    output.add_argument(
        "--json", action="store_true", help="print the result as one JSON object"
    )
    sub.set_defaults(handler=_cmd_train)


def recipe_from_args(args: argparse.Namespace) -> Any:
    """The recipe ``tlstudio train`` runs: the project file's (or the
    defaults), with every flag given on the command line applied on top."""
    from tlstudio.core.spec.recipe import Recipe, load_project

    if args.project:
        recipe = load_project(args.project)
    else:
        missing = [
            flag
            for flag, value in (("--data", args.data), ("--base", args.base))
            if not value
        ]
        if missing:
            raise UsageError(
                f"the following arguments are required: {', '.join(missing)} (or --project FILE) "
                "(see 'tlstudio train --help')"
            )
        recipe = Recipe()
    sections: dict[str, dict[str, Any]] = {
        "data": {},
        "base": {},
        "head": {},
        "training": {},
    }
    for flag, (section, field) in _TRAIN_OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            sections[section][field] = (
                tuple(value) if isinstance(value, list) else value
            )
    if args.data:
        sections["data"]["folders"] = tuple(
            os.path.abspath(folder) for folder in args.data
        )
    if args.base:
        sections["base"].update(base_fields(args.base))
    if args.weights is not None:
        sections["base"]["weights"] = weights_choice(args.weights)
    changes: dict[str, Any] = {
        section: dataclasses.replace(getattr(recipe, section), **fields)
        for section, fields in sections.items()
        if fields
    }
    if args.cut is not None:
        changes["cut_tensor"] = args.cut
    return recipe.replace(**changes)


def _resumed_recipe(args: argparse.Namespace) -> Any:
    """The recipe of the run ``--resume`` names; UsageError when recipe options are given with it."""
    given = [flag for flag in ("project", "save_project", "data", "base", "weights", "cut", "out", "dry_run",
                               *_TRAIN_OVERRIDES) if getattr(args, flag) not in (None, False)]
    if given:
        flags = ", ".join("--" + flag.replace("_", "-") for flag in given)
        raise UsageError(f"--resume continues a run with its own recipe and folder; leave out {flags}")
    from tlstudio.core.train.runs import resumable_run

    return resumable_run(args.resume).recipe


def _cmd_train(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    recipe = _resumed_recipe(args) if args.resume else recipe_from_args(args)
    if args.save_project:
        from tlstudio.core.spec.recipe import save_project

        path = save_project(recipe, args.save_project)
        progress.note(f"Saved the project to {path}")
    if args.dry_run:
        print_json(recipe.to_dict())
        return EXIT_OK
    existing_folders(recipe.data.folders, "data")
    from tlstudio.core.train import cluster

    config = cluster.read_tf_config()
    if config is not None and config.size > 1:
        cluster.worker_timeout()
    load_tensorflow(args)
    from tlstudio.core.train import devices, distribute
    from tlstudio.core.train.training import train

    devices.enable_memory_growth()
    progress.note(f"Device: {devices.device_badge()}")
    if config is not None and config.size > 1:
        progress.note(
            f"Cluster (TF_CONFIG): this is {config.name} of {config.size} at {config.address}"
            f"{' (the chief)' if config.is_chief else ''}; waiting for the other workers"
        )
    distribute.exit_on_hang(True)
    strategy = distribute.training_strategy(should_stop)
    count = distribute.replicas(strategy)
    if count > 1:
        size = recipe.training.batch_size
        progress.note(
            f"Training on {count} replicas: batch size {size} each, {size * count} per step"
        )
    result = train(
        recipe,
        on_event=progress,
        should_stop=should_stop,
        out_dir=args.out,
        strategy=strategy,
        resume_dir=args.resume,
    )
    progress.close()
    if args.json:
        print_json(
            {
                **result.metrics,
                "epochs": int(result.metrics.get("epochs", 0)),
                "head_epochs": int(result.metrics.get("head_epochs", 0)),
                "run_dir": str(result.run_dir) if result.chief else None,
                "chief": result.chief,
                "classes": list(result.classes),
                "best_epoch": result.best_epoch,
                "cancelled": result.cancelled,
                "stopped_early": result.stopped_early,
                "skipped": [{"path": path, "reason": reason} for path, reason in result.skipped],
                "history": result.history,
            }
        )
    else:
        _print_train_report(result)
    return EXIT_CANCELLED if result.cancelled else EXIT_OK


def _print_train_report(result: Any) -> None:
    if result.cancelled:
        state = "Stopped on request"
    elif result.stopped_early:
        state = "Stopped early: the validation loss stopped improving"
    else:
        state = "Finished"
    epochs = int(result.metrics.get("epochs", result.best_epoch))
    print(
        f"{state}. Kept epoch {result.best_epoch} of {epochs}, the one with the lowest validation loss.\n"
    )
    names = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
    print_table(
        ["metric", "value"],
        [
            [name, f"{result.metrics[name]:.4f}"]
            for name in names
            if name in result.metrics
        ],
        numeric={1},
    )
    print(f"\nClasses: {', '.join(result.classes)}")
    if result.skipped:
        print(f"Skipped {counted(len(result.skipped), 'unreadable image')}, listed in skipped.json of the run folder:")
        for path, reason in result.skipped[:10]:
            print(f"  {path}: {reason}")
    if not result.chief:
        print(
            "Run folder: written by the chief (worker 0) of the cluster; this worker kept no files."
        )
        return
    print(f"Run folder: {result.run_dir}")
    if result.cancelled:
        print(f"Continue it with: tlstudio train --resume {result.run_dir}")
    print(
        f"Next: tlstudio predict {result.run_dir} IMAGES...  or  tlstudio export {result.run_dir} --to DIR"
    )
