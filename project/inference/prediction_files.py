"""``python -m project predict``'s files (:func:`predict_files`): the image files the inputs name (:func:`image_paths`),
the preprocessing record of a checkpoint or a model folder, checked (:func:`checked_preprocessing`), and the CSV
(:func:`write_csv`).

Importing this module imports no torch: predicting with an ONNX file runs through
:mod:`project.inference.numpy_predictor` (onnxruntime, numpy and PIL) and starts in a fraction of a second; a
checkpoint, a model folder without ``model.onnx`` or what that path does not take loads
:class:`project.inference.prediction.Predictor` (torch, and Lightning for a checkpoint) when it is needed.
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from project.errors import UserInputError
from project.files.atomic import written_whole
from project.files.tables import spreadsheet_safe
from project.inference.counting import Counting
from project.inference.model_folder import CONFIG, ONNX, read_config
from project.inference.numpy_predictor import NumpyPredictor

if TYPE_CHECKING:
    from project.inference.prediction import Predictor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The files a folder given to ``predict`` is searched for: torchvision's ``IMG_EXTENSIONS`` (a test keeps them the
same), named here so that this module imports no torchvision."""
_MAX_IMAGE_SIZE = 4096
"""The largest image side a preprocessing record may state (training sizes are 28 to a few hundred; a crafted
checkpoint's 10**6 would ask for terabytes)."""


def checked_preprocessing(record: Any, source: object) -> dict[str, Any]:
    """``record`` (a checkpoint's or an export's preprocessing) when it holds what training writes: ``channels`` 1 or
    3, an ``image_size`` from 1 to :data:`_MAX_IMAGE_SIZE`, a finite ``mean`` and a positive finite ``std`` (one number
    or one per channel), ``class_names`` a list of names, ``mnist_style`` true or false; one line naming ``source``
    otherwise."""
    problem = _preprocessing_problem(record)
    if problem:
        raise UserInputError(f"{source}: its preprocessing record {problem}; it is not one that training writes")
    return record


def _preprocessing_problem(record: Any) -> str | None:
    """What is wrong with a preprocessing record (:func:`checked_preprocessing`), or ``None``."""
    if not isinstance(record, dict):
        return f"is {type(record).__name__}, not a mapping"
    channels, size = record.get("channels"), record.get("image_size")
    if channels not in (1, 3) or isinstance(channels, bool):
        return f"has channels {channels!r}, not 1 or 3"
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_IMAGE_SIZE:
        return f"has image_size {size!r}, not a whole number from 1 to {_MAX_IMAGE_SIZE}"
    for key in ("mean", "std"):
        values = record.get(key) if isinstance(record.get(key), list) else [record.get(key)]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and abs(v) < 1e30 for v in values)
        if len(values) not in (1, channels) or not numbers or (key == "std" and min(values) <= 0):
            return f"has {key} {record.get(key)!r}, not {'a positive' if key == 'std' else 'a'} number per channel"
    names = record.get("class_names")
    if not isinstance(names, list) or not all(isinstance(name, str | int | float) for name in names):
        return f"has class_names {names!r}, not a list of names"
    if not isinstance(record.get("mnist_style", False), bool):
        return f"has mnist_style {record['mnist_style']!r}, not true or false"
    return None


def image_paths(inputs: Iterable[str]) -> list[Path]:
    """Every image file named by ``inputs``: files, folders (recursively, by extension) and glob patterns."""
    found: list[Path] = []
    for item in inputs:
        if glob.has_magic(item):
            matches = sorted(Path(match) for match in glob.glob(os.path.expanduser(item), recursive=True))
            if not matches:
                raise UserInputError(f"{item}: the pattern matches no file")
            found += [path for path in matches if path.is_file()]
        elif Path(item).is_dir():
            found += sorted(p for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif Path(item).is_file():
            found.append(Path(item))
        else:
            raise UserInputError(f"{item}: no such file, folder or pattern")
    if not found:
        raise UserInputError(f"no image files in {', '.join(inputs)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return list(dict.fromkeys(found))


def predict_files(
    model_path: Path,
    inputs: list[str],
    out: Path,
    batch_size: int = 256,
    mnist_style: bool = False,
    skipping: Callable[[str], None] = lambda line: print(f"skipped {line}", file=sys.stderr),
) -> tuple[int, list[str]]:
    """Predict the image files ``inputs`` name (:func:`image_paths`) with a model folder, a checkpoint or an ONNX
    export, and write the rows to the CSV file ``out``, which must not exist yet (:func:`write_csv`); ``skipping``
    says each file that cannot be decoded. An ONNX file (a model folder's, or one named) runs without torch where it
    can (:class:`~project.inference.numpy_predictor.NumpyPredictor`), else through
    :meth:`~project.inference.prediction.Predictor.load`: the same rows either way.
    Returns how many rows, and the files skipped."""
    if batch_size < 1:
        raise UserInputError(f"batch_size: expected a positive integer, got {batch_size}")
    if out.exists() or out.is_symlink():  # a result is never overwritten
        raise UserInputError(f"--out {out} exists already: name another file (or remove it)")
    paths = image_paths(inputs)
    counting = Counting("predict", "images", len(paths))  # predict: 512/2000 images, every few seconds
    predictor = _numpy_predictor(model_path, mnist_style) or _torch_predictor(model_path, mnist_style)
    rows, skipped = predictor.predict(paths, batch_size, counting)
    counting.end()
    for line in skipped:
        skipping(line)
    if not rows:
        raise UserInputError(f"none of the {len(paths)} files could be decoded: nothing to predict")
    write_csv(rows, out)
    return len(rows), skipped


def _numpy_predictor(model_path: Path, mnist_style: bool) -> NumpyPredictor | None:
    """The torch-free predictor of a model folder's ``model.onnx`` or of an ONNX file with ``config.json`` beside it,
    where onnxruntime is installed and :meth:`NumpyPredictor.from_config` takes the model; ``None`` otherwise, and for
    anything wrong with the files: the torch path then runs, or says what is wrong in its own words."""
    path = Path(model_path).expanduser()
    onnx = path / ONNX if path.is_dir() else path
    if mnist_style or onnx.suffix != ".onnx" or not onnx.is_file() or not (onnx.parent / CONFIG).is_file():
        return None
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    try:
        config = read_config(onnx.parent)
        preprocessing = checked_preprocessing(config["preprocessing"], onnx.parent / CONFIG)
        return NumpyPredictor.from_config(onnx, config, preprocessing)
    except UserInputError:
        return None


def _torch_predictor(model_path: Path, mnist_style: bool) -> Predictor:
    """The predictor of a checkpoint, a model folder's safetensors network, or an ONNX file that the torch-free path
    does not take: it imports torch (and, for a checkpoint, Lightning), which take seconds, so only here."""
    from project.inference.prediction import Predictor

    return Predictor.load(model_path, mnist_style)


def write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    """The rows as CSV, written whole or not at all (:func:`~project.files.atomic.written_whole`). Text that a
    spreadsheet would run as a formula is escaped (:func:`spreadsheet_safe`)."""
    with written_whole(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _format_value(v) for k, v in row.items()} for row in rows)


def _format_value(value: Any) -> Any:
    """Numbers with 6 significant digits; text made spreadsheet-safe."""
    if isinstance(value, float | np.floating):
        return f"{value:.6g}"
    return spreadsheet_safe(value) if isinstance(value, str) else value
