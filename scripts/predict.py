#!/usr/bin/env python
"""Predict new images with a checkpoint or an ONNX export; write one CSV row per image.

    python scripts/predict.py logs/mnist/version_0/checkpoints/last.ckpt my_digits/ --out predictions.csv
    python scripts/predict.py exported/mnist/model.onnx "scans/**/*.png" photo.jpg

Inputs are files, folders (searched recursively for images) and glob patterns (quote them). Each image goes through
the preprocessing the network was trained with (read from the checkpoint, or from model.json beside the export).
Columns: ``path``, ``predicted`` (the class, the labels present, or the value) and, for classification, the
probability of each class or label (``p_<name>``). A file that cannot be decoded is named on stderr and skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from project.errors import ReportedError, UserInputError
from project.inference.prediction import Predictor, image_paths, write_csv
from project.trusted import add_trust_option, trust


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a checkpoint (.ckpt) or an exported model.onnx")
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="the CSV file to write")
    parser.add_argument("--batch-size", type=int, default=256)
    mnist_style = "make each image's digit look like MNIST's first (light ink on black, in 20x20, centred in 28x28)"
    parser.add_argument("--mnist-style", action="store_true", help=mnist_style)
    add_trust_option(parser)
    args = parser.parse_args()
    try:
        trust(*args.trust)
        if args.batch_size < 1:
            raise UserInputError(f"--batch-size must be a positive integer, got {args.batch_size}")
        paths = image_paths(args.inputs)
        rows, skipped = Predictor.load(args.model, args.mnist_style).predict(paths, args.batch_size)
        for line in skipped:
            print(f"skipped {line}", file=sys.stderr)
        if not rows:
            raise UserInputError(f"none of the {len(paths)} files could be decoded: nothing to predict")
        write_csv(rows, args.out)
    except ReportedError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    print(f"wrote {len(rows)} predictions to {args.out}" + (f" ({len(skipped)} files skipped)" if skipped else ""))


if __name__ == "__main__":
    main()
