"""The ``tlstudio`` command line: headless commands over the engine.

``tlstudio COMMAND ...`` runs one step of the workflow (inspect a base model,
scan data, train, predict, export, manage weights) and prints a table, or JSON
with ``--json``. Progress goes to stderr, results to stdout. ``tlstudio``
alone opens the desktop app (see :mod:`tlstudio.__main__`).

The engine is imported inside each command, never at the top: ``--help``,
``--version`` and argument mistakes answer at once, without the seconds
TensorFlow takes to import. A user's mistake (a :class:`UserError` or a bad
argument) prints one line, ``tlstudio: error: ...``, and exits with 2; Ctrl+C
asks long work to stop at its next check, a second Ctrl+C aborts, and either
exits with 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Iterator, Sequence

from tlstudio.cli_progress import ProgressRenderer
from tlstudio.core.spec.errors import Cancelled, DataError, ModelFileError, UserError
from tlstudio.core.spec.events import ShouldStop
from tlstudio.core.spec.recipe import OPTIMIZERS, POOLINGS

PROG = "tlstudio"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130
NAMED_BASES = ("vgg16", "vgg19", "efficientnet-lite0")
DOWNLOADABLE_BASES = ("vgg16", "vgg19")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

class UsageError(Exception):
    """A command line that does not parse; reported like a user error."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so every
    mistake ends in the same single ``tlstudio: error:`` line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return the exit status.

    ``tlstudio`` with no arguments opens the desktop app; that choice is made
    in :mod:`tlstudio.__main__`, so this module never imports the GUI.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = build_parser().parse_args(arguments)
        progress = ProgressRenderer(quiet=args.quiet)
        with progress, _stop_on_interrupt(progress) as should_stop:
            return args.handler(args, progress, should_stop)
    except SystemExit as exit_request:
        return _exit_code(exit_request.code)
    except (UserError, UsageError) as error:
        if "--debug" in arguments:
            traceback.print_exc()
        _print_error(str(error))
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        sys.stderr.write(f"\n{PROG}: cancelled\n")
        return EXIT_CANCELLED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options and one sub-parser per command."""
    parser = _Parser(
        prog=PROG,
        description="TL Studio: build an image classifier by transfer learning. "
        "Run without arguments to open the desktop app.",
        epilog="Example: tlstudio train --data photos/ --base vgg16 --epochs 5",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", help="show no progress, only results and warnings")
    common.add_argument("--debug", action="store_true", help="also print the traceback of errors")
    _add_inspect(commands, common)
    _add_data(commands, common)
    _add_train(commands, common)
    _add_predict(commands, common)
    _add_export(commands, common)
    _add_weights(commands, common)
    _add_cache(commands, common)
    _add_devices(commands, common)
    _add_doctor(commands, common)
    _add_runs(commands, common)
    _add_evaluate(commands, common)
    _add_explain(commands, common)
    _add_activations(commands, common)
    _add_compare_cuts(commands, common)
    parser.set_defaults(handler=_no_command, quiet=False, debug=False)
    return parser


# ---------------------------------------------------------------- inspect


def _add_inspect(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "inspect",
        parents=[common],
        help="list a base model's cut tensors",
        description="List every tensor of a base model where a new head can be attached: "
        "name, layer type, output shape, parameters, receptive field and whether it can be cut there. "
        "The default cut tensor is marked with *.",
    )
    sub.add_argument("base", metavar="BASE", help=_BASE_HELP)
    sub.add_argument(
        "--weights",
        default="none",
        metavar="imagenet|none|FILE",
        help="weights to load (default: none; the catalogue is the same with any weights)",
    )
    sub.add_argument("--top", action="store_true", help="include VGG's fully-connected top (fc1, fc2, predictions)")
    sub.add_argument("--input-size", type=_positive_int, metavar="N", help="input width and height (default 224)")
    sub.add_argument("--graph", action="store_true", help="also list the traced TensorFlow graph tensors of each layer")
    sub.add_argument("--json", action="store_true", help="print a JSON list of tensors")
    sub.set_defaults(handler=_cmd_inspect)


def _cmd_inspect(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    spec = _base_spec(args)
    _load_tensorflow(args)
    from tlstudio.core.model import backbones, tensors

    model = backbones.build_base(spec, on_event=progress, should_stop=should_stop)
    infos = tensors.catalogue(model)
    default_cut = tensors.default_cut_tensor(model)
    graph = tensors.graph_tensors(model) if args.graph else {}
    if args.json:
        rows = []
        for info in infos:
            row = {**dataclasses.asdict(info), "default_cut": info.name == default_cut}
            if args.graph:
                row["graph_tensors"] = graph.get(info.layer, [])
            rows.append(row)
        _print_json(rows)
        return EXIT_OK
    table = []
    for info in infos:
        field = _field_text(info.receptive_field, info.jump)
        table.append(
            [
                ("* " if info.name == default_cut else "  ") + info.name,
                info.layer_type,
                _shape_text(info.shape),
                f"{info.params:,}",
                field,
                "yes" if info.cuttable else f"no: {info.reason}",
            ]
        )
        if args.graph:
            table.extend([["      " + name, "", "", "", "", ""] for name in graph.get(info.layer, [])])
    _print_table(["  tensor", "type", "output shape", "params", "receptive field", "cuttable"], table)
    print(
        f"\n{model.name}: {len(infos)} tensors, {model.count_params():,} parameters; "
        f"default cut tensor {default_cut}"
    )
    return EXIT_OK


# ---------------------------------------------------------------- data


def _add_data(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "data",
        parents=[common],
        help="scan image folders and report what can be trained on",
        description="Scan image folders: one folder with a sub-folder per class, one with train/ and val/ "
        "(optional test/) sub-folders, or several folders that are each one class. Reports classes with "
        "their image counts, the validation split, skipped files with reasons, empty classes and duplicates.",
    )
    sub.add_argument("folders", nargs="+", metavar="DIR", help="image folder(s)")
    sub.add_argument("--val-fraction", type=float, default=0.2, metavar="F", help="validation share (default 0.2)")
    sub.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the validation split (default 0)")
    sub.add_argument("--exclude", nargs="+", default=(), metavar="CLASS", help="classes to leave out")
    sub.add_argument(
        "--verify", action="store_true", help="also decode every image fully (slower; finds corrupt pixel data)"
    )
    sub.add_argument("--json", action="store_true", help="print the scan report as JSON")
    sub.set_defaults(handler=_cmd_data)


def _cmd_data(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    from tlstudio.core.data.dataset import scan_dataset, verify_dataset

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
        _print_json(dataset.to_summary())
    else:
        _print_data_report(dataset)
    return EXIT_OK


def _print_data_report(dataset: Any) -> None:
    counts = dataset.counts
    splits = dataset.split_counts()
    show_test = bool(dataset.test)
    headers = ["class", "images", "train", "val"] + (["test"] if show_test else [])
    rows = [
        [name, counts[name], splits["train"][name], splits["val"][name]] + ([splits["test"][name]] if show_test else [])
        for name in dataset.classes
    ]
    split_text = f"{len(dataset.train)} train, {len(dataset.val)} val"
    if show_test:
        split_text += f", {len(dataset.test)} test"
    print(
        f"Layout: {dataset.layout}. {len(dataset.classes)} classes, "
        f"{sum(counts.values())} usable images ({split_text})"
    )
    if rows:
        print()
        _print_table(headers, rows, numeric=set(range(1, len(headers))))
    if dataset.empty_classes:
        print(f"\nEmpty classes (no usable images): {', '.join(dataset.empty_classes)}")
    if dataset.excluded_classes:
        print(f"Excluded classes: {', '.join(dataset.excluded_classes)}")
    if dataset.skipped:
        print(f"\nSkipped {len(dataset.skipped)} file{'s' if len(dataset.skipped) != 1 else ''}:")
        for skipped in dataset.skipped:
            print(f"  {skipped.path}: {skipped.reason}")
    if dataset.duplicates:
        print(f"\n{len(dataset.duplicates)} group(s) of byte-identical files, each kept on one side of the split:")
        for group in dataset.duplicates:
            print("  " + " = ".join(group))
    for problem in dataset.problems():
        print(f"\nNot trainable yet: {problem}")


# ---------------------------------------------------------------- train

# Flag name -> (recipe section, field) for the settings a flag overrides;
# --data, --base, --weights and --cut need more than a copy and are handled apart.
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


def _add_train(commands: Any, common: argparse.ArgumentParser) -> None:
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
    source.add_argument("--project", metavar="FILE", help="a project file saved by the app or with --save-project")
    source.add_argument("--save-project", metavar="FILE", help="write the recipe built from the flags to FILE")
    source.add_argument("--dry-run", action="store_true", help="check the recipe (and save it) without training")
    data = sub.add_argument_group("data")
    data.add_argument("--data", nargs="+", metavar="DIR", help="image folder(s), as for 'tlstudio data'")
    data.add_argument("--val-fraction", type=float, metavar="F", help="validation share (default 0.2)")
    data.add_argument("--seed", type=int, metavar="N", help="seed of the validation split (default 0)")
    data.add_argument("--exclude", nargs="+", metavar="CLASS", help="classes to leave out")
    base = sub.add_argument_group("base model")
    base.add_argument("--base", metavar="BASE", help=_BASE_HELP)
    base.add_argument("--weights", metavar="imagenet|none|FILE", help="base weights (default imagenet)")
    base.add_argument("--top", action=argparse.BooleanOptionalAction, help="keep VGG's fully-connected top")
    base.add_argument("--input-size", type=_positive_int, metavar="N", help="input width and height (default 224)")
    base.add_argument("--cut", metavar="TENSOR", help="cut tensor, e.g. block4_pool:0 (default: second-to-last layer)")
    head = sub.add_argument_group("head")
    head.add_argument("--pooling", choices=POOLINGS, help="how a 4-D cut tensor is flattened (default avg)")
    head.add_argument("--hidden", type=_int_list, metavar="N[,N...]", help="hidden dense layer sizes, e.g. 256,128")
    head.add_argument("--dropout", type=float, metavar="F", help="dropout before the last layer (default 0)")
    head.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, help="batch norm in the head (default on)")
    head.add_argument("--bn-epsilon", type=float, metavar="X", help="batch-norm epsilon (default 1e-3)")
    head.add_argument("--bn-momentum", type=float, metavar="X", help="batch-norm momentum (default 0.99)")
    training = sub.add_argument_group("training")
    training.add_argument("--epochs", type=int, metavar="N", help="epochs of head training (default 10)")
    training.add_argument("--batch-size", type=int, metavar="N", help="images per batch (default 32)")
    training.add_argument("--lr", type=float, metavar="X", help="learning rate (default 1e-3)")
    training.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer (default adam)")
    training.add_argument("--momentum", type=float, metavar="X", help="SGD momentum (default 0.9)")
    training.add_argument("--cosine-decay", action=argparse.BooleanOptionalAction, help="cosine learning-rate decay")
    training.add_argument("--patience", type=int, metavar="N", help="early-stopping patience in epochs, 0 = off")
    training.add_argument("--class-weights", action=argparse.BooleanOptionalAction, help="weigh rare classes up")
    training.add_argument("--augment", action=argparse.BooleanOptionalAction, help="flip, rotate, zoom, contrast")
    training.add_argument("--fine-tune-epochs", type=int, metavar="N", help="epochs of fine-tuning after (default 0)")
    training.add_argument("--fine-tune-layers", type=int, metavar="N", help="unfreeze the last N base layers")
    training.add_argument("--fine-tune-from", metavar="LAYER", help="unfreeze the base from LAYER on")
    training.add_argument("--fine-tune-lr-factor", type=float, metavar="X", help="fine-tune LR = lr * X (default 0.1)")
    training.add_argument(
        "--finalize-bn",
        action=argparse.BooleanOptionalAction,
        help="recompute the head's batch-norm statistics over the whole training set after training",
    )
    output = sub.add_argument_group("output")
    output.add_argument(
        "--out",
        metavar="DIR",
        help="the run folder to write, new or empty (default: a new folder under the user data folder)",
    )
    output.add_argument("--json", action="store_true", help="print the result as one JSON object")
    sub.set_defaults(handler=_cmd_train)


def recipe_from_args(args: argparse.Namespace) -> Any:
    """The recipe ``tlstudio train`` runs: the project file's (or the
    defaults), with every flag given on the command line applied on top."""
    from tlstudio.core.spec.recipe import Recipe, load_project

    if args.project:
        recipe = load_project(args.project)
    else:
        missing = [flag for flag, value in (("--data", args.data), ("--base", args.base)) if not value]
        if missing:
            raise UsageError(
                f"the following arguments are required: {', '.join(missing)} (or --project FILE) "
                "(see 'tlstudio train --help')"
            )
        recipe = Recipe()
    sections: dict[str, dict[str, Any]] = {"data": {}, "base": {}, "head": {}, "training": {}}
    for flag, (section, field) in _TRAIN_OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            sections[section][field] = tuple(value) if isinstance(value, list) else value
    if args.data:
        sections["data"]["folders"] = tuple(os.path.abspath(folder) for folder in args.data)
    if args.base:
        sections["base"].update(_base_fields(args.base))
    if args.weights is not None:
        sections["base"]["weights"] = _weights_choice(args.weights)
    changes: dict[str, Any] = {
        section: dataclasses.replace(getattr(recipe, section), **fields)
        for section, fields in sections.items()
        if fields
    }
    if args.cut is not None:
        changes["cut_tensor"] = args.cut
    return recipe.replace(**changes)


def _cmd_train(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    recipe = recipe_from_args(args)
    if args.save_project:
        from tlstudio.core.spec.recipe import save_project

        path = save_project(recipe, args.save_project)
        progress.note(f"Saved the project to {path}")
    if args.dry_run:
        _print_json(recipe.to_dict())
        return EXIT_OK
    _existing_folders(recipe.data.folders, "data")
    from tlstudio.core.train import cluster

    config = cluster.read_tf_config()
    if config is not None and config.size > 1:
        cluster.worker_timeout()
    _load_tensorflow(args)
    from tlstudio.core.train import devices, distribute
    from tlstudio.core.train.training import train

    devices.enable_memory_growth()
    progress.note(f"Device: {devices.device_badge()}")
    if config is not None and config.size > 1:
        progress.note(
            f"Cluster (TF_CONFIG): this is {config.name} of {config.size} at {config.address}"
            f"{' (the chief)' if config.is_chief else ''}; waiting for the other workers"
        )
    strategy = distribute.training_strategy()
    count = distribute.replicas(strategy)
    if count > 1:
        size = recipe.training.batch_size
        progress.note(f"Training on {count} replicas: batch size {size} each, {size * count} per step")
    result = train(recipe, on_event=progress, should_stop=should_stop, out_dir=args.out, strategy=strategy)
    progress.close()
    if args.json:
        _print_json(
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
    print(f"{state}. Kept epoch {result.best_epoch} of {epochs}, the one with the lowest validation loss.\n")
    names = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
    _print_table(
        ["metric", "value"],
        [[name, f"{result.metrics[name]:.4f}"] for name in names if name in result.metrics],
        numeric={1},
    )
    print(f"\nClasses: {', '.join(result.classes)}")
    if not result.chief:
        print("Run folder: written by the chief (worker 0) of the cluster; this worker kept no files.")
        return
    print(f"Run folder: {result.run_dir}")
    print(f"Next: tlstudio predict {result.run_dir} IMAGES...  or  tlstudio export {result.run_dir} --to DIR")


# ---------------------------------------------------------------- predict


def _add_predict(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "predict",
        parents=[common],
        help="classify image files with a trained model",
        description="Classify images (files or folders) with a run folder or a .keras model exported by TL Studio.",
    )
    sub.add_argument(
        "model", metavar="MODEL_OR_RUN", help="a run folder, an export folder, or a .keras with labels.txt beside it"
    )
    sub.add_argument("files", nargs="+", metavar="FILES", help="image files or folders")
    sub.add_argument("--top", type=_positive_int, default=3, metavar="K", help="classes shown per image (default 3)")
    sub.add_argument("--csv", metavar="FILE", help="also write the predictions to a CSV file")
    sub.add_argument("--json", action="store_true", help="print the predictions as JSON")
    sub.set_defaults(handler=_cmd_predict)


def _cmd_predict(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    if Path(args.model).exists():
        _load_tensorflow(args)  # a missing path is reported by load_predictor, without TensorFlow
    from tlstudio.core.use.predict import load_predictor, predict_files

    predictor = load_predictor(args.model)
    predictions = predict_files(predictor, args.files, top_k=args.top, on_event=progress, should_stop=should_stop)
    progress.close()
    if args.csv:
        _write_predictions_csv(predictions, args.csv, args.top)
    if args.json:
        _print_json(
            [
                {
                    "path": p.path,
                    "top": [{"label": label, "probability": float(score)} for label, score in p.top],
                    "error": p.error,
                }
                for p in predictions
            ]
        )
    else:
        rows = []
        for p in predictions:
            guesses = "  ".join(f"{label} {score:.1%}" for label, score in p.top)
            rows.append([p.path, f"error: {p.error}" if p.error else guesses])
        _print_table(["file", "prediction"], rows)
    failed = sum(1 for p in predictions if p.error)
    if failed:
        progress.line(f"{failed} of {len(predictions)} files could not be classified.")
    return EXIT_OK


def _write_predictions_csv(predictions: Sequence[Any], path: str, top_k: int) -> None:
    header = ["path"] + [f"{kind}{rank}" for rank in range(1, top_k + 1) for kind in ("label", "probability")]
    try:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header + ["error"])
            for p in predictions:
                cells: list[Any] = [p.path]
                for rank in range(top_k):
                    cells += [p.top[rank][0], f"{p.top[rank][1]:.6f}"] if rank < len(p.top) else ["", ""]
                writer.writerow(cells + [p.error])
    except OSError as error:
        raise UserError(
            f"Cannot write the CSV file {path!r}: {error.strerror or error}. Choose a folder you can write to."
        ) from None


# ---------------------------------------------------------------- export


def _add_export(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "export",
        parents=[common],
        help="export a run's model and check every artifact against it",
        description="Export a run's best model (.keras, SavedModel, TFLite, ONNX) with labels.txt and "
        "model_card.json, then run validation images through every artifact and compare with the model. "
        "Exits with 1 when a round-trip check fails.",
    )
    sub.add_argument("run", metavar="RUN", help="a run folder")
    sub.add_argument("--to", required=True, metavar="DIR", help="destination folder (must not exist, or --overwrite)")
    sub.add_argument(
        "--formats",
        type=_name_list,
        metavar="F[,F...]",
        help="keras, savedmodel, tflite, tflite-int8, onnx (default: all but tflite-int8)",
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    sub.add_argument("--json", action="store_true", help="print the export report as JSON")
    sub.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    _existing_folders([args.run], "run")
    _load_tensorflow(args)
    from tlstudio.core.use import export

    report = export.export_run(
        args.run,
        args.to,
        formats=args.formats or export.DEFAULT_FORMATS,
        overwrite=args.overwrite,
        on_event=progress,
        should_stop=should_stop,
    )
    progress.close()
    if args.json:
        _print_json(
            {
                "destination": str(report.destination),
                "artifacts": {name: str(path) for name, path in report.artifacts.items()},
                "checks": [dataclasses.asdict(check) for check in report.checks],
                "passed": report.passed,
            }
        )
    else:
        print(f"Exported to {report.destination}\n")
        rows = [
            [
                check.format,
                "-" if check.max_abs_diff is None else f"{check.max_abs_diff:.2e}",
                f"{check.top1_agreement:.1%}",
                "pass" if check.passed else "FAIL",
                check.message,
            ]
            for check in report.checks
        ]
        _print_table(["format", "max abs diff", "top-1 agreement", "check", "note"], rows)
    if not report.passed:
        failed = ", ".join(check.format for check in report.checks if not check.passed)
        sys.stderr.write(f"{PROG}: round-trip check failed for {failed}\n")
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------- weights


def _add_weights(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "weights",
        parents=[common],
        help="show, import or download pretrained ImageNet weights",
        description="ImageNet weights for VGG16/VGG19 live in Keras' cache (~/.keras/models). "
        "'status' shows what is there, 'import FILE' copies a downloaded .h5 in after checking its hash, "
        "'download BASE' fetches one. EfficientNet-Lite0's weights come with TL Studio.",
    )
    actions = _status_actions(sub, common, "list the weights files and where they are", _cmd_weights_status)
    import_ = actions.add_parser("import", parents=[common], help="copy a downloaded weights file into the cache")
    import_.add_argument("file", metavar="FILE", help="an official Keras VGG16/VGG19 .h5 weights file")
    import_.set_defaults(handler=_cmd_weights_import)
    download = actions.add_parser("download", parents=[common], help="download the weights of a base model")
    download.add_argument("base", metavar="BASE", choices=NAMED_BASES, help=", ".join(NAMED_BASES))
    download.add_argument("--top", action="store_true", help="the weights with the fully-connected top")
    download.add_argument("--mirror", metavar="URL", help="fetch from URL/FILENAME instead of the official site")
    download.set_defaults(handler=_cmd_weights_download)


def _cmd_weights_status(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
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
    state, path = backbones.weights_status("efficientnet-lite0", False)
    entries.append({"base": "efficientnet-lite0", "include_top": None, "status": state,
                    "path": str(path) if path else None, "filename": None, "size_bytes": None, "url": None})
    if args.json:
        _print_json(entries)
        return EXIT_OK
    rows = []
    for entry in entries:
        top = "-" if entry["include_top"] is None else ("with top" if entry["include_top"] else "no top")
        size = "" if entry["size_bytes"] is None else f"{entry['size_bytes'] / 1e6:.0f} MB"
        rows.append([entry["base"], top, entry["status"], size, entry["path"] or entry["url"] or ""])
    _print_table(["base", "variant", "status", "size", "file (or where to download it)"], rows)
    if any(entry["status"] == "missing" for entry in entries):
        print("\nGet missing files with 'tlstudio weights download BASE [--top]', or download them elsewhere "
              "and run 'tlstudio weights import FILE'.")
    return EXIT_OK


def _cmd_weights_import(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    from tlstudio.core.model import backbones

    path = backbones.import_weights(args.file)
    print(f"Imported {args.file} -> {path}")
    return EXIT_OK


def _cmd_weights_download(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    if args.base not in DOWNLOADABLE_BASES:
        print(f"{args.base}'s ImageNet weights come with TL Studio; there is nothing to download.")
        return EXIT_OK
    from tlstudio.core.model import backbones

    path = backbones.resolve_weights(
        backbones.weights_file(args.base, args.top), mirror=args.mirror, on_event=progress, should_stop=should_stop
    )
    progress.close()
    print(f"{args.base} ({'with top' if args.top else 'no top'}) weights: {path}")
    return EXIT_OK


# ---------------------------------------------------------------- cache


def _add_cache(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "cache",
        parents=[common],
        help="show or clear the feature cache",
        description="Training a head on a frozen base keeps each image's features on disk, so later runs with "
        "another head or other settings skip the base. 'status' lists what is kept; 'clear' deletes it "
        "(it is rebuilt as needed). The size limit is TLSTUDIO_FEATURE_CACHE_MB (default 2048; 0 turns it off).",
    )
    actions = _status_actions(sub, common, "list the cached feature sets and their size", _cmd_cache_status)
    clear = actions.add_parser("clear", parents=[common], help="delete every cached feature")
    clear.set_defaults(handler=_cmd_cache_clear)


def _cmd_cache_status(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    from tlstudio.core.data.feature_cache import FeatureCache

    state = FeatureCache().status()
    if args.json:
        _print_json(
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
        _print_table(
            ["feature set", "images", "size"],
            [[s.description, s.images, f"{s.bytes / 2**20:.1f} MB"] for s in state.sets],
            numeric={1, 2},
        )
        print()
    print(
        f"{state.entries} image feature(s) in {len(state.sets)} set(s), {state.bytes / 2**20:.1f} MB of "
        f"{state.limit_bytes / 2**20:.0f} MB, in {state.path}"
    )
    return EXIT_OK


def _cmd_cache_clear(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    from tlstudio.core.data.feature_cache import FeatureCache

    cache = FeatureCache()
    freed = cache.clear()
    print(f"Cleared the feature cache in {cache.root}: {freed / 2**20:.1f} MB freed.")
    return EXIT_OK


# ---------------------------------------------------------------- devices, runs


def _add_devices(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser("devices", parents=[common], help="list the devices TensorFlow can train on")
    sub.add_argument("--json", action="store_true", help="print the devices as JSON")
    sub.set_defaults(handler=_cmd_devices)


def _cmd_devices(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    _load_tensorflow(args)
    from tlstudio.core.train import devices

    found = devices.list_devices()
    badge = devices.device_badge()
    reason = devices.cpu_only_reason()
    if args.json:
        _print_json({"devices": [dataclasses.asdict(d) for d in found], "badge": badge, "cpu_only_reason": reason})
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
    _print_table(["device", "kind", "memory", "compute capability"], rows)
    print(f"\n{badge}")
    if reason and reason not in badge:
        print(f"CPU only: {reason}")
    return EXIT_OK


def _add_doctor(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "doctor",
        parents=[common],
        help="explain why TensorFlow does or does not use the GPU",
        description="Report TensorFlow's build (CUDA and cuDNN versions), the devices it sees, the NVIDIA "
        "driver and CUDA_VISIBLE_DEVICES, and the likely reason when no GPU is used.",
    )
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    _load_tensorflow(args)
    from tlstudio.core.train.doctor import diagnose

    report = diagnose()
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.text())
    return EXIT_OK


def _add_runs(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser("runs", parents=[common], help="list the training runs in a folder")
    sub.add_argument("folder", nargs="?", metavar="DIR", help="where to look (default: the user data folder)")
    sub.add_argument("--json", action="store_true", help="print the runs as JSON")
    sub.set_defaults(handler=_cmd_runs)


def _cmd_runs(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    from tlstudio.core.spec import paths
    from tlstudio.core.train.runs import list_runs

    runs = list_runs(args.folder)
    if args.json:
        _print_json(
            [
                {
                    "path": str(r.path),
                    "base": _base_text(r.recipe.base),
                    "classes": list(r.classes),
                    "metrics": r.metrics,
                    "recipe": r.recipe.to_dict(),
                }
                for r in runs
            ]
        )
        return EXIT_OK
    if not runs:
        print(f"No runs in {args.folder or paths.runs_dir()}.")
        return EXIT_OK
    rows = [
        [
            str(r.path),
            _base_text(r.recipe.base),
            r.recipe.cut_tensor or "default",
            len(r.classes),
            _metric_text(r.metrics.get("val_accuracy")),
        ]
        for r in runs
    ]
    _print_table(["run", "base", "cut tensor", "classes", "val accuracy"], rows, numeric={3, 4})
    return EXIT_OK


# ---------------------------------------------------------------- evaluate, explain, activations, compare-cuts


def _add_evaluate(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "evaluate",
        parents=[common],
        help="measure a run's model on its validation or test images",
        description="Predict the run's validation split (the images training held out) or its test split (a test/ "
        "folder beside train/ and val/) and report accuracy, top-k accuracy, per-class precision, recall, F1 and "
        "support, the confusion matrix and the worst mistakes. The result is saved in the run folder "
        "(evaluation.json) and goes into the model card of later exports.",
        epilog="Example: tlstudio evaluate RUN --split test --top-k 3 --json",
    )
    sub.add_argument("run", metavar="RUN", help="a run folder")
    sub.add_argument("--split", choices=("val", "test"), default="val", help="which images (default val)")
    sub.add_argument("--top-k", type=_positive_int, default=5, metavar="K", help="k of the top-k accuracy (default 5)")
    sub.add_argument("--mistakes", type=int, default=10, metavar="N", help="worst images to list (default 10)")
    sub.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    sub.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    from tlstudio.core.train.runs import load_run

    run = load_run(args.run)  # a folder that is not a run is reported before TensorFlow loads
    _load_tensorflow(args)
    from tlstudio.core.use.evaluation import EVALUATION_FILE, evaluate_run, mistakes

    result = evaluate_run(run, split=args.split, top_k=args.top_k, on_event=progress, should_stop=should_stop)
    progress.close()
    worst = mistakes(result, limit=max(0, args.mistakes))
    if args.json:
        _print_json(
            {
                **result.summary(),
                "mistakes": [
                    {
                        "path": r.path,
                        "true": result.classes[r.true],
                        "predicted": result.classes[r.predicted],
                        "probability": r.confidence,
                        "loss": r.loss,
                    }
                    for r in worst
                ],
            }
        )
        return EXIT_OK
    split = "validation" if result.split == "val" else "test"
    print(f"{result.images} {split} images of {result.run}")
    print(
        f"accuracy {_metric_text(result.accuracy)}   top-{result.top_k} accuracy "
        f"{_metric_text(result.top_k_accuracy)}   mean loss {_metric_text(result.loss)}\n"
    )
    _print_table(
        ["class", "precision", "recall", "F1", "support"],
        [[c.name, _score_text(c.precision), _score_text(c.recall), _score_text(c.f1), c.support]
         for c in result.per_class],
        numeric={1, 2, 3, 4},
    )
    print("\nConfusion matrix (rows: true class, columns: predicted class):\n")
    _print_table(
        ["true \\ predicted", *result.classes],
        [[name, *row] for name, row in zip(result.classes, result.confusion_matrix.tolist())],
        numeric=set(range(1, len(result.classes) + 1)),
    )
    if worst:
        print("\nWorst images (misclassified or unsure), highest loss first:\n")
        _print_table(
            ["image", "true", "predicted", "probability", "loss"],
            [[r.path, result.classes[r.true], result.classes[r.predicted], f"{r.confidence:.1%}", f"{r.loss:.3f}"]
             for r in worst],
            numeric={3, 4},
        )
    for skipped in result.skipped:
        progress.line(f"Skipped {skipped.path}: {skipped.reason}")
    print(f"\nSaved to {Path(result.run) / EVALUATION_FILE}")
    return EXIT_OK


def _add_explain(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "explain",
        parents=[common],
        help="show which parts of an image made the model choose a class (Grad-CAM)",
        description="Grad-CAM: colour the regions of IMAGE that raise the score of a class (the predicted one "
        "by default), taken at the cut tensor or at any convolutional tensor of the base, and save the "
        "image with the heat map over it as a PNG.",
        epilog="Example: tlstudio explain RUN photo.jpg --tensor block4_conv3:0 --out cam.png",
    )
    sub.add_argument("run", metavar="RUN", help="a run folder, or an export folder / .keras with labels.txt")
    sub.add_argument("image", metavar="IMAGE", help="the image to explain")
    sub.add_argument("--tensor", metavar="NAME", help="a spatial tensor of the base, e.g. block4_conv3:0 "
                     "(default: the cut tensor)")
    sub.add_argument("--class", dest="class_name", metavar="NAME", help="the class to explain (default: the predicted)")
    sub.add_argument("--alpha", type=float, default=0.45, metavar="F", help="heat map opacity 0..1 (default 0.45)")
    sub.add_argument("--colormap", choices=("jet", "viridis"), default="jet", help="heat map colours (default jet)")
    sub.add_argument("--out", required=True, metavar="PNG", help="the PNG file to write")
    sub.set_defaults(handler=_cmd_explain)


def _cmd_explain(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
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
    result = grad_cam(predictor.model, image, tensor_name=args.tensor, class_index=class_index)
    path = save_png(overlay(image, result.heatmap, alpha=args.alpha, colormap=args.colormap), args.out)
    predicted = int(result.probabilities.argmax())
    print(
        f"Grad-CAM of class {predictor.classes[result.class_index]} "
        f"({result.probabilities[result.class_index]:.1%}; predicted {predictor.classes[predicted]} "
        f"{result.probabilities[predicted]:.1%}) at {result.tensor} -> {path}"
    )
    return EXIT_OK


def _add_activations(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "activations",
        parents=[common],
        help="save the feature maps of one tensor for an image as a grid",
        description="Run IMAGE through the model and save the feature maps of a tensor of the base as a grid of "
        "channels (each scaled to its own range; the most active ones when there are more than --max-channels).",
        epilog="Example: tlstudio activations RUN photo.jpg --tensor block2_conv2:0 --out maps.png",
    )
    sub.add_argument("run", metavar="RUN", help="a run folder, or an export folder / .keras with labels.txt")
    sub.add_argument("image", metavar="IMAGE", help="the image to look at")
    sub.add_argument(
        "--tensor", required=True, metavar="NAME", help="a spatial tensor of the base, e.g. block2_conv2:0"
    )
    sub.add_argument("--max-channels", type=_positive_int, default=64, metavar="N", help="channels shown (default 64)")
    sub.add_argument("--out", required=True, metavar="PNG", help="the PNG file to write")
    sub.set_defaults(handler=_cmd_activations)


def _cmd_activations(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    image = _model_path_and_image(args)
    from tlstudio.core.use.activations import activations, channel_grid
    from tlstudio.core.use.gradcam import save_png
    from tlstudio.core.use.predict import load_predictor

    maps = activations(load_predictor(args.run).model, image, args.tensor)
    path = save_png(channel_grid(maps, max_channels=args.max_channels), args.out)
    height, width, channels = maps.shape
    shown = min(channels, args.max_channels)
    print(f"{args.tensor}: {channels} maps of {height}x{width} ({shown} shown) -> {path}")
    return EXIT_OK


def _model_path_and_image(args: argparse.Namespace) -> Any:
    """Check the model path, then decode the image (a bad image is reported before TensorFlow loads)."""
    if not Path(args.run).exists():
        raise UserError(f"No run or model at {args.run!r}. Check the path.")
    from tlstudio.core.data.images import load_rgb

    image = load_rgb(args.image)
    _load_tensorflow(args)
    return image


def _add_compare_cuts(commands: Any, common: argparse.ArgumentParser) -> None:
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
    sub.add_argument("--data", nargs="+", required=True, metavar="DIR", help="image folder(s), as for 'tlstudio data'")
    sub.add_argument("--base", required=True, metavar="BASE", help=_BASE_HELP)
    sub.add_argument(
        "--weights", default="imagenet", metavar="imagenet|none|FILE", help="base weights (default imagenet)"
    )
    sub.add_argument("--top", action="store_true", help="include VGG's fully-connected top (to compare fc1, fc2)")
    sub.add_argument("--cuts", required=True, type=_tensor_list, metavar="T1,T2,...", help="cut tensors to compare")
    sub.add_argument("--input-size", type=_positive_int, metavar="N", help="input width and height (default 224)")
    sub.add_argument("--val-fraction", type=float, default=0.2, metavar="F", help="validation share (default 0.2)")
    sub.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the validation split (default 0)")
    sub.add_argument("--json", action="store_true", help="print one JSON object per cut, in a list")
    sub.set_defaults(handler=_cmd_compare_cuts)


def _cmd_compare_cuts(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    from tlstudio.core.data.dataset import scan_dataset

    spec = _base_spec(args)
    dataset = scan_dataset(
        _existing_folders(args.data, "data"),
        val_fraction=args.val_fraction,
        seed=args.seed,
        on_event=progress,
        should_stop=should_stop,
    )
    _load_tensorflow(args)
    from tlstudio.core.model import backbones
    from tlstudio.core.use.cut_comparison import compare_cuts

    base = backbones.build_base(spec, on_event=progress, should_stop=should_stop)
    size = base.inputs[0].shape[1] or spec.input_size
    results = compare_cuts(
        base, dataset, args.cuts, int(size), backbones.preprocessing_mode(spec), on_event=progress,
        should_stop=should_stop,
    )
    progress.close()
    if args.json:
        _print_json([dataclasses.asdict(r) for r in results])
        return EXIT_OK
    _print_table(
        ["cut tensor", "features", "val accuracy", "train accuracy", "fit seconds"],
        [[r.tensor, r.feature_size, _metric_text(r.val_accuracy), _metric_text(r.train_accuracy), f"{r.seconds:.2f}"]
         for r in results],
        numeric={1, 2, 3, 4},
    )
    print(f"\n{len(dataset.train)} training and {len(dataset.val)} validation images, {len(dataset.classes)} classes")
    return EXIT_OK


def _tensor_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected tensor names separated by commas, e.g. block3_pool:0; got {text!r}")
    return names


def _score_text(value: float) -> str:
    """A precision, recall or F1; '-' when undefined (a class never predicted, or with no images)."""
    return "-" if math.isnan(value) else f"{value:.4f}"


# ---------------------------------------------------------------- helpers


def _status_actions(
    sub: argparse.ArgumentParser, common: argparse.ArgumentParser, status_help: str, handler: Any
) -> Any:
    """Give ``sub`` actions with ``status`` the default (``handler``); ``--json`` works before or after
    ``status``. Returns the actions, for the command to add its others."""
    sub.add_argument("--json", action="store_true", help="print the status as JSON")
    actions = sub.add_subparsers(title="actions", metavar="ACTION", parser_class=_Parser)
    status = actions.add_parser("status", parents=[common], help=status_help)
    status.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the status as JSON")
    status.set_defaults(handler=handler)
    sub.set_defaults(handler=handler)
    return actions


_BASE_HELP = "vgg16, vgg19, efficientnet-lite0, or the path of a .keras/.h5 model file"


def _base_fields(base: str) -> dict[str, Any]:
    """BaseSpec fields for a BASE argument: a named network or a model file."""
    if base.lower() in NAMED_BASES:
        return {"name": base.lower(), "model_file": None}
    path = Path(base)
    if path.is_file():
        return {"name": "file", "model_file": str(path.resolve())}
    if path.suffix.lower() in MODEL_SUFFIXES or os.sep in base:
        raise ModelFileError(f"No model file at {base!r}. Check the path. Received: base={base!r}")
    raise UsageError(
        f"unknown base model {base!r}; expected {', '.join(NAMED_BASES)} or the path of a .keras/.h5 model file"
    )


def _base_spec(args: argparse.Namespace) -> Any:
    """The BaseSpec of a command's BASE, --weights, --top and --input-size arguments."""
    from tlstudio.core.spec.recipe import BaseSpec

    return BaseSpec(
        **_base_fields(args.base),
        weights=_weights_choice(args.weights),
        include_top=args.top,
        input_size=args.input_size or 224,
    )


def _base_text(spec: Any) -> str:
    """A base model as the user named it: ``vgg16``, or the model file's name."""
    return Path(spec.model_file).name if spec.name == "file" and spec.model_file else spec.name


def _weights_choice(weights: str) -> str:
    """``imagenet``, ``none`` or the absolute path of an existing weights file."""
    if weights.lower() in ("imagenet", "none"):
        return weights.lower()
    path = Path(weights)
    if not path.is_file():
        raise UsageError(f"--weights must be imagenet, none or an existing weights file; no file at {weights!r}")
    return str(path.resolve())


def _existing_folders(folders: Sequence[str], what: str) -> list[str]:
    """Check folders exist before anything slow happens."""
    for folder in folders:
        path = Path(folder)
        if not path.exists():
            raise DataError(f"The {what} folder {folder!r} does not exist. Check the path. Received: {folder!r}")
        if not path.is_dir():
            raise DataError(f"The {what} folder {folder!r} is a file, not a folder. Received: {folder!r}")
    return [str(folder) for folder in folders]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, e.g. 256,128; got {text!r}"
        ) from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def _shape_text(shape: Sequence[int | None]) -> str:
    """``14x14x512`` for ``(None, 14, 14, 512)``: the batch axis is left out."""
    dims = list(shape[1:]) if shape and shape[0] is None else list(shape)
    return "x".join("?" if d is None else str(d) for d in dims) or "scalar"


def _field_text(size: int | None, jump: int | None) -> str:
    """``40 (jump 4)``; a tensor without spatial axes sees the whole input."""
    if size is None:
        return "-"
    return f"{size} (jump {jump})" if jump is not None else f"{size} (whole input)"


def _metric_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int] | None = None) -> None:
    """A plain aligned table on stdout; ``numeric`` columns are right-aligned."""
    numeric = numeric or set()
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def render(row: list[str]) -> str:
        parts = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        return "  ".join(parts).rstrip()

    print(render(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(render(row))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print_error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {' '.join(message.split())}\n")


def _exit_code(code: Any) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_FAILED


def _silence_stdout() -> None:
    """After a closed pipe (``tlstudio data DIR | head``), keep Python from
    complaining again while it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlstudio")
    except PackageNotFoundError:
        return "unknown"


def _no_command(args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop) -> int:
    raise UsageError("no command given; run 'tlstudio' without arguments to open the app (see 'tlstudio --help')")


def _load_tensorflow(args: argparse.Namespace) -> None:
    """Import TensorFlow and Keras with their start-up chatter hidden.

    TensorFlow 2.21 logs through absl before its log level is read, so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot silence lines like "oneDNN custom operations
    are on" or a failed ``cuInit`` on machines without a GPU; they would break
    up the progress output. File descriptor 2 is pointed at a temporary file
    for the import and the first look for GPUs; if that fails, what was
    captured is written out before the error. ``--debug`` shows it all.
    """
    if "tensorflow" in sys.modules or args.debug:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        saved = None
    with tempfile.TemporaryFile() as capture:
        if saved is not None:
            os.dup2(capture.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        except BaseException:
            _restore_stderr(saved)
            saved = None
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", errors="replace"))
            raise
        finally:
            _restore_stderr(saved)


def _restore_stderr(saved: int | None) -> None:
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _stop_on_interrupt(progress: ProgressRenderer) -> Iterator[ShouldStop]:
    """Ctrl+C asks the running work to stop at its next check (training keeps
    its best epoch so far); a second Ctrl+C aborts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        progress.line("Stopping at the next step; press Ctrl+C again to abort now.")

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
