"""Commands over finished runs: ``predict``, ``evaluate``, ``export`` and ``runs``."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from tlstudio.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    base_text,
    existing_folders,
    load_tensorflow,
    metric_text,
    name_list,
    positive_int,
    print_json,
    print_table,
)
from tlstudio.cli.progress import ProgressRenderer
from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.events import ShouldStop
from tlstudio.core.spec.text import counted


def add_predict(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "predict",
        parents=[common],
        help="classify image files with a trained model",
        description="Classify images (files or folders) with a run folder or a .keras model exported by TL Studio.",
    )
    sub.add_argument(
        "model",
        metavar="MODEL_OR_RUN",
        help="a run folder, an export folder, or a .keras with labels.txt beside it",
    )
    sub.add_argument("files", nargs="+", metavar="FILES", help="image files or folders")
    sub.add_argument(
        "--top",
        type=positive_int,
        default=3,
        metavar="K",
        help="classes shown per image (default 3)",
    )
    sub.add_argument(
        "--csv", metavar="FILE", help="also write the predictions to a CSV file"
    )
    sub.add_argument(
        "--json", action="store_true", help="print the predictions as JSON"
    )
    sub.set_defaults(handler=_cmd_predict)


def _cmd_predict(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    if Path(args.model).exists():
        load_tensorflow(
            args
        )  # a missing path is reported by load_predictor, without TensorFlow
    from tlstudio.core.use.predict import load_predictor, predict_files, summary_line

    predictor = load_predictor(args.model)
    predictions = predict_files(
        predictor,
        args.files,
        top_k=args.top,
        on_event=progress,
        should_stop=should_stop,
    )
    progress.close()
    if args.csv:
        _write_predictions_csv(predictions, args.csv, args.top)
    if args.json:
        print_json(
            [
                {
                    "path": p.path,
                    "top": [
                        {"label": label, "probability": float(score)}
                        for label, score in p.top
                    ],
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
        print_table(["file", "prediction"], rows)
    if any(p.error for p in predictions):
        progress.line(summary_line(predictions) + ".")
    return EXIT_OK


def _write_predictions_csv(predictions: Sequence[Any], path: str, top_k: int) -> None:
    header = ["path"] + [
        f"{kind}{rank}"
        for rank in range(1, top_k + 1)
        for kind in ("label", "probability")
    ]
    try:
        # surrogateescape writes a file name that is not valid UTF-8 back as its own bytes.
        with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.writer(handle)
            writer.writerow(header + ["error"])
            for p in predictions:
                cells: list[Any] = [p.path]
                for rank in range(top_k):
                    cells += (
                        [p.top[rank][0], f"{p.top[rank][1]:.6f}"]
                        if rank < len(p.top)
                        else ["", ""]
                    )
                writer.writerow(cells + [p.error])
    except OSError as error:
        raise UserError(
            f"Cannot write the CSV file {path!r}: {error.strerror or error}. Choose a folder you can write to."
        ) from None


def add_export(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "export",
        parents=[common],
        help="export a run's model, check every artifact against it and measure what each costs",
        description="Export a run's best model (.keras, SavedModel, TFLite float32/fp16/int8, ONNX) with labels.txt, "
        "model_card.json and example scripts, then run the validation images through every artifact: float "
        "artifacts must match the model within 1e-4, fp16 and int8 ones keep their top-1 agreement (95% "
        "interval reaching 95%) and accuracy (at most 1 point lost). Each artifact's size, latency and peak "
        "memory are measured in its own runtime. Exits with 1 when a float artifact fails its check (with "
        "--strict, also when a quantised one is not recommended).",
    )
    sub.add_argument("run", metavar="RUN", help="a run folder")
    sub.add_argument(
        "--to",
        required=True,
        metavar="DIR",
        help="destination folder (must not exist, or --overwrite)",
    )
    sub.add_argument(
        "--formats",
        type=name_list,
        metavar="F[,F...]",
        help="keras, savedmodel, tflite, tflite-fp16, tflite-int8, onnx (default: keras, savedmodel, tflite, onnx)",
    )
    sub.add_argument(
        "--overwrite", action="store_true", help="replace an earlier TL Studio export at the destination (other folders are never replaced)"
    )
    sub.add_argument(
        "--no-costs", action="store_true", help="skip measuring size, latency and peak memory"
    )
    sub.add_argument(
        "--strict", action="store_true", help="exit with 1 when a quantised artifact is not recommended"
    )
    sub.add_argument(
        "--json", action="store_true", help="print the export report as JSON"
    )
    sub.set_defaults(handler=_cmd_export)


def _cmd_export(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    existing_folders([args.run], "run")
    load_tensorflow(args)
    from tlstudio.core.use import export

    report = export.export_run(
        args.run,
        args.to,
        formats=args.formats or export.DEFAULT_FORMATS,
        overwrite=args.overwrite,
        on_event=progress,
        should_stop=should_stop,
        measure_costs=not args.no_costs,
    )
    progress.close()
    if args.json:
        print_json(
            {
                "destination": str(report.destination),
                "artifacts": {
                    name: str(path) for name, path in report.artifacts.items()
                },
                "checks": [
                    {**dataclasses.asdict(check), "status": check.status}
                    for check in report.checks
                ],
                "costs": [dataclasses.asdict(cost) for cost in report.costs],
                "machine": report.machine,
                "calibration": report.calibration,
                "scripts": [str(path) for path in report.scripts],
                "passed": report.passed,
            }
        )
    else:
        _print_export(report)
    for check in report.checks:
        if not check.passed:
            sys.stderr.write(f"{PROG}: {check.format} {check.status.upper()}: {check.message}\n")
    if report.failed or (args.strict and not report.passed):
        failed = ", ".join(c.format for c in report.checks if not c.passed)
        sys.stderr.write(f"{PROG}: round-trip check failed for {failed}\n")
        return EXIT_FAILED
    return EXIT_OK


def _print_export(report: Any) -> None:
    """The check table, then the cost table with the machine it was measured on."""
    print(f"Exported to {report.destination}\n")
    rows = [
        [
            check.format,
            "-" if check.max_abs_diff is None else f"{check.max_abs_diff:.2e}",
            f"{check.top1_agreement:.1%} [{check.agreement_interval[0]:.1%}, {check.agreement_interval[1]:.1%}]",
            _percent(check.accuracy),
            _percent(check.reference_accuracy),
            {"passed": "pass", "failed": "FAIL"}.get(check.status, "NOT RECOMMENDED"),
        ]
        for check in report.checks
    ]
    print_table(
        ["format", "max abs diff", "top-1 agreement [95% CI]", "accuracy", "in-app accuracy", "check"],
        rows,
    )
    if report.checks:
        first = report.checks[0]
        print(f"\nOver {first.message.rsplit('over ', 1)[-1]}.")
    if report.calibration:
        print(f"int8 calibrated on {report.calibration['source']}.")
    if report.costs:
        print(f"\nCosts measured on {report.machine} (batch 1, warm):\n")
        print_table(
            ["format", "size", "latency median", "latency p95", "peak memory", "runtime"],
            [
                [
                    cost.format,
                    _size_text(cost.size_bytes),
                    _ms(cost.latency_median_ms),
                    _ms(cost.latency_p95_ms),
                    "-" if cost.peak_memory_mb is None else f"{cost.peak_memory_mb:.0f} MiB",
                    cost.runtime or cost.error,
                ]
                for cost in report.costs
            ],
            numeric={1, 2, 3, 4},
        )
    if report.scripts:
        print("\nExample scripts: " + ", ".join(path.name for path in report.scripts))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} ms"


def _size_text(size: int) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def add_runs(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "runs", parents=[common], help="list the training runs in a folder"
    )
    sub.add_argument(
        "folder",
        nargs="?",
        metavar="DIR",
        help="where to look (default: the user data folder)",
    )
    sub.add_argument("--json", action="store_true", help="print the runs as JSON")
    sub.set_defaults(handler=_cmd_runs)


def _cmd_runs(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    from tlstudio.core.spec import paths
    from tlstudio.core.train.runs import scan_runs

    listing = scan_runs(args.folder)
    runs = listing.runs
    if args.json:
        print_json(
            [
                {
                    "path": str(r.path),
                    "status": r.status,
                    "reason": r.reason,
                    "base": base_text(r.recipe.base),
                    "classes": list(r.classes),
                    "metrics": r.metrics,
                    "recipe": r.recipe.to_dict(),
                }
                for r in runs
            ]
            + [{"path": str(b.path), "status": "broken", "reason": b.reason} for b in listing.broken]
        )
        return EXIT_OK
    if not runs and not listing.broken:
        print(f"No runs in {args.folder or paths.runs_dir()}.")
        return EXIT_OK
    rows = [
        [
            str(r.path),
            r.state_text,
            base_text(r.recipe.base),
            r.recipe.cut_tensor or "default",
            len(r.classes),
            metric_text(r.metrics.get("val_accuracy")),
        ]
        for r in runs
    ]
    rows += [[str(b.path), f"broken: {b.reason}", "", "", "", ""] for b in listing.broken]
    print_table(
        ["run", "status", "base", "cut tensor", "classes", "val accuracy"], rows, numeric={4, 5}
    )
    resumable = [r for r in runs if r.resumable]
    if resumable:
        print(f"\nContinue an interrupted or stopped run with: tlstudio train --resume {resumable[0].path}")
    return EXIT_OK


def add_evaluate(commands: Any, common: argparse.ArgumentParser) -> None:
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
    sub.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="which images (default val)",
    )
    sub.add_argument(
        "--top-k",
        type=positive_int,
        default=5,
        metavar="K",
        help="k of the top-k accuracy (default 5)",
    )
    sub.add_argument(
        "--mistakes",
        type=int,
        default=10,
        metavar="N",
        help="worst images to list (default 10)",
    )
    sub.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    sub.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    from tlstudio.core.train.runs import load_run

    run = load_run(
        args.run
    )  # a folder that is not a run is reported before TensorFlow loads
    load_tensorflow(args)
    from tlstudio.core.data.verify import read_summary
    from tlstudio.core.use.evaluation import EVALUATION_FILE, evaluate_run, mistakes

    result = evaluate_run(
        run,
        split=args.split,
        top_k=args.top_k,
        on_event=progress,
        should_stop=should_stop,
    )
    progress.close()
    worst = mistakes(result, limit=max(0, args.mistakes))
    if args.json:
        print_json(
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
    print(f"{counted(result.images, split + ' image')} of {result.run}")
    print(
        f"accuracy {metric_text(result.accuracy)}   top-{result.top_k} accuracy "
        f"{metric_text(result.top_k_accuracy)}   mean loss {metric_text(result.loss)}\n"
    )
    print_table(
        ["class", "precision", "recall", "F1", "support"],
        [
            [
                c.name,
                _score_text(c.precision),
                _score_text(c.recall),
                _score_text(c.f1),
                c.support,
            ]
            for c in result.per_class
        ],
        numeric={1, 2, 3, 4},
    )
    print("\nConfusion matrix (rows: true class, columns: predicted class):\n")
    print_table(
        ["true \\ predicted", *result.classes],
        [
            [name, *row]
            for name, row in zip(result.classes, result.confusion_matrix.tolist())
        ],
        numeric=set(range(1, len(result.classes) + 1)),
    )
    if worst:
        print("\nWorst images (misclassified or unsure), highest loss first:\n")
        print_table(
            ["image", "true", "predicted", "probability", "loss"],
            [
                [
                    r.path,
                    result.classes[r.true],
                    result.classes[r.predicted],
                    f"{r.confidence:.1%}",
                    f"{r.loss:.3f}",
                ]
                for r in worst
            ],
            numeric={3, 4},
        )
    for skipped in result.skipped:
        progress.line(f"Skipped {skipped.path}: {skipped.reason}")
    if result.skipped:
        progress.line(read_summary(result.images, len(result.skipped)) + ".")
    print(f"\nSaved to {Path(result.run) / EVALUATION_FILE}")
    return EXIT_OK


def _score_text(value: float) -> str:
    """A precision, recall or F1; '-' when undefined (a class never predicted, or with no images)."""
    return "-" if math.isnan(value) else f"{value:.4f}"
