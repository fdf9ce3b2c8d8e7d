#!/usr/bin/env python
"""Evaluate a checkpoint on a data split: metrics.json, report.md and confusion_matrix.png, and the report on stdout.

    python scripts/evaluate.py logs/mnist/version_0/checkpoints/last.ckpt
    python scripts/evaluate.py CKPT --split val --data-dir ../shared/data

The data module is the one the checkpoint was trained with (its class and arguments are stored in it); ``--data-dir``
points it elsewhere. The files go to ``<run folder>/evaluation/<split>-<checkpoint name>/`` unless ``--out`` says.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from project.errors import DataNotFoundError, ReportedError
from project.inference.evaluation import (
    compute_report,
    data_module_from_checkpoint,
    markdown_report,
    predict,
    write_reports,
)
from project.training.checkpoints import read_checkpoint
from project.training.task_module import TaskModule
from project.trusted import add_trust_option, trust

SPLITS = {"train": "fit", "val": "validate", "test": "test"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--data-dir", help="where the data is, if not where the checkpoint's run found it")
    parser.add_argument("--out", type=Path, help="folder for the three files")
    add_trust_option(parser)
    args = parser.parse_args()
    try:
        trust(*args.trust)
        evaluate(args.checkpoint, args.split, args.data_dir, args.out)
    except ReportedError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None


def evaluate(checkpoint_path: Path, split: str, data_dir: str | None, out: Path | None) -> list[Path]:
    checkpoint = read_checkpoint(checkpoint_path)
    model = TaskModule.from_checkpoint(checkpoint, checkpoint_path)
    data = data_module_from_checkpoint(checkpoint, data_dir=data_dir)
    try:
        data.prepare_data()  # never a download (data_module_from_checkpoint): the data_dir is the checkpoint's
    except DataNotFoundError as error:
        raise DataNotFoundError(
            f"{error}\n  (evaluate never downloads: give --data-dir DIR, or download the data once with the "
            "python -m project fit run of this dataset)"
        ) from None
    data.setup(SPLITS[split])
    batches = data.normalised_batches(split)  # in order, unaugmented: in memory, from the cache or a DataLoader
    report = compute_report(predict(model, batches, model.task), model.task, data.class_names)
    report["checkpoint"], report["split"] = str(checkpoint_path), split
    folder = out or checkpoint_path.resolve().parent.parent / "evaluation" / f"{split}-{checkpoint_path.stem}"
    title = f"{checkpoint_path.name} on the {split} split of {type(data).__name__}"
    written = write_reports(report, folder, title)
    print(markdown_report(report, title))
    print("wrote " + ", ".join(str(path) for path in written))
    return written


if __name__ == "__main__":
    main()
