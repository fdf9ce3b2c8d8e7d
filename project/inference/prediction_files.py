"""``python -m project predict``'s files (:func:`predict_files`): the image files the inputs name (:func:`image_paths`)
or, for a text model, the lines of the text files they name (:func:`text_lines`; ``-`` is stdin), the preprocessing
record of a checkpoint or a model folder, checked (:func:`checked_preprocessing`), and the CSV (:func:`write_csv`).

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
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from project.errors import UserInputError
from project.files.atomic import written_whole
from project.files.tables import spreadsheet_safe
from project.inference.counting import Counting
from project.inference.model_folder import CONFIG, ONNX, TOKENIZER, read_config
from project.inference.numpy_predictor import NumpyPredictor, NumpyTextPredictor

if TYPE_CHECKING:
    from project.inference.prediction import Predictor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The files a folder given to ``predict`` is searched for: torchvision's ``IMG_EXTENSIONS`` (a test keeps them the
same), named here so that this module imports no torchvision."""
_MAX_IMAGE_SIZE = 4096
"""The largest image side a preprocessing record may state (training sizes are 28 to a few hundred; a crafted
checkpoint's 10**6 would ask for terabytes)."""
_MAX_TEXT_LENGTH = 65536
"""The longest token sequence a text model's preprocessing record may state (BERT's is 512)."""


def is_text(record: Any) -> bool:
    """Whether a preprocessing record is a text model's: it holds its ``tokenizer`` (a checkpoint, the tokenizer's
    JSON; a model folder's ``config.json``, the name of its ``tokenizer.json``). An image model's has none."""
    return isinstance(record, dict) and "tokenizer" in record


def checked_preprocessing(record: Any, source: object) -> dict[str, Any]:
    """``record`` (a checkpoint's or an export's preprocessing) when it holds what training writes; one line naming
    ``source`` otherwise. An image model's: ``channels`` 1 or 3, an ``image_size`` from 1 to :data:`_MAX_IMAGE_SIZE`,
    a finite ``mean`` and a positive finite ``std`` (one number or one per channel), ``class_names`` a list of names,
    ``mnist_style`` true or false. A text model's (:func:`is_text`): ``tokenizer`` a string, ``max_length`` from 3 to
    :data:`_MAX_TEXT_LENGTH`, ``class_names`` a list of names."""
    problem = _text_problem(record) if is_text(record) else _preprocessing_problem(record)
    if problem:
        raise UserInputError(f"{source}: its preprocessing record {problem}; it is not one that training writes")
    return record


def folder_preprocessing(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """A model folder's preprocessing record (its ``config.json``'s, checked: :func:`checked_preprocessing`) as a
    checkpoint holds it: for a text model, with the JSON of the folder's ``tokenizer.json`` in place of its name."""
    source = Path(folder) / CONFIG
    record = checked_preprocessing(config["preprocessing"], source)
    if not is_text(record):
        return record
    if record["tokenizer"] != TOKENIZER:  # a name, never a path: the folder's own file
        named = record["tokenizer"]
        raise UserInputError(f"{source}: its preprocessing names the tokenizer {named!r}, not {TOKENIZER}")
    if not (Path(folder) / TOKENIZER).is_file():
        raise UserInputError(f"{folder}: no {TOKENIZER} in it (python -m project export writes it beside a text model)")
    return {**record, "tokenizer": _text_of(Path(folder) / TOKENIZER)}


def _text_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a text model's preprocessing record (:func:`checked_preprocessing`), or ``None``."""
    length, names = record.get("max_length"), record.get("class_names")
    if not isinstance(record["tokenizer"], str):
        return f"has a tokenizer of type {type(record['tokenizer']).__name__}, not a string"
    if isinstance(length, bool) or not isinstance(length, int) or not 3 <= length <= _MAX_TEXT_LENGTH:
        return f"has max_length {length!r}, not a whole number from 3 to {_MAX_TEXT_LENGTH}"
    if not isinstance(names, list) or not all(isinstance(name, str | int | float) for name in names):
        return f"has class_names {names!r}, not a list of names"
    return None


def _preprocessing_problem(record: Any) -> str | None:
    """What is wrong with an image model's preprocessing record (:func:`checked_preprocessing`), or ``None``."""
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


EMPTY_LINE = "an empty line"
"""How a skipped line of a text file is said (``texts.txt:3: an empty line``): a text model predicts no empty text."""


def text_lines(inputs: Iterable[str], stdin: TextIO | None = None) -> tuple[list[str], list[str]]:
    """The texts of a text model's inputs, one a line (UTF-8): text files, glob patterns of them, and ``-`` for
    ``stdin`` (``sys.stdin`` unless given); and a line naming each empty (or blank) line, skipped."""
    texts, skipped = [], []
    for item in inputs:
        if item == "-":
            named = [("stdin", (stdin or sys.stdin).read())]
        else:
            named = [(str(path), _text_of(path)) for path in _text_files(item)]
        for name, content in named:
            for number, line in enumerate(content.splitlines(), start=1):
                if line.strip():
                    texts.append(line)
                else:
                    skipped.append(f"{name}:{number}: {EMPTY_LINE}")
    if not texts:
        raise UserInputError(f"no text in {', '.join(inputs)} (a text model predicts text files, one text a line)")
    return texts, skipped


def _text_files(item: str) -> list[Path]:
    """The files one input of a text model names: a file, or the files a glob pattern matches."""
    if glob.has_magic(item):
        matches = sorted(Path(match) for match in glob.glob(os.path.expanduser(item), recursive=True))
        if not matches:
            raise UserInputError(f"{item}: the pattern matches no file")
        return [path for path in matches if path.is_file()]
    if Path(item).is_dir():
        raise UserInputError(f"{item}: a folder; a text model reads text files, one text a line (or - for stdin)")
    if not Path(item).is_file():
        raise UserInputError(f"{item}: no such file or pattern (a text model reads text files, one text a line)")
    return [Path(item)]


def _text_of(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserInputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def predict_files(
    model_path: Path,
    inputs: list[str],
    out: Path,
    batch_size: int = 256,
    mnist_style: bool = False,
    skipping: Callable[[str], None] = lambda line: print(f"skipped {line}", file=sys.stderr),
) -> tuple[int, list[str]]:
    """Predict what ``inputs`` name with a model folder, a checkpoint or an ONNX export, and write the rows to the
    CSV file ``out``, which must not exist yet (:func:`write_csv`): for an image model the image files
    (:func:`image_paths`; ``skipping`` says each that cannot be decoded), for a text model the lines of the text
    files (:func:`text_lines`; ``-`` is stdin; ``skipping`` says each empty line). An ONNX file (a model
    folder's, or one named) runs without torch where it can (:class:`NumpyPredictor`, :class:`NumpyTextPredictor`),
    else through :meth:`~project.inference.prediction.Predictor.load`: the same rows either way.
    Returns how many rows, and the inputs skipped."""
    if batch_size < 1:
        raise UserInputError(f"batch_size: expected a positive integer, got {batch_size}")
    if out.exists() or out.is_symlink():  # a result is never overwritten
        raise UserInputError(f"--out {out} exists already: name another file (or remove it)")
    text, predictor = _recorded_text(model_path), None
    if text is None:  # a checkpoint: only torch reads what it is, so the inputs are checked before
        _check_named(inputs)
        predictor = _torch_predictor(model_path, mnist_style)
        text = is_text(predictor.preprocessing)
    if text and mnist_style:
        raise UserInputError(f"--mnist_style prepares images of digits: {model_path} is a text model")
    items, skipped = text_lines(inputs) if text else (image_paths(inputs), [])
    counting = Counting("predict", "texts" if text else "images", len(items))  # predict: 512/2000 images
    if predictor is None:  # an ONNX file runs without torch where it can
        predictor = _numpy_predictor(model_path, mnist_style) or _torch_predictor(model_path, mnist_style)
    rows, unreadable = predictor.predict(items, batch_size, counting)
    counting.end()
    for line in skipped + unreadable:
        skipping(line)
    if not rows:
        raise UserInputError(f"none of the {len(items)} files could be decoded: nothing to predict")
    write_csv(rows, out)
    return len(rows), skipped + unreadable


def _recorded_text(model_path: Path) -> bool | None:
    """Whether a model folder's (or an ONNX file's, with ``config.json`` beside it) model takes text; ``None`` for
    anything else (a checkpoint)."""
    path = Path(model_path).expanduser()
    folder = path if path.is_dir() else path.parent if path.suffix == ".onnx" else None
    if folder is None or not (folder / CONFIG).is_file():
        return None
    return is_text(read_config(folder)["preprocessing"])


def _check_named(inputs: list[str]) -> None:
    """Refuse an input that names nothing: neither ``-``, a pattern, nor a file or folder that exists."""
    for item in inputs:
        if item != "-" and not glob.has_magic(item) and not Path(item).expanduser().exists():
            raise UserInputError(f"{item}: no such file, folder or pattern")


def _numpy_predictor(model_path: Path, mnist_style: bool) -> NumpyPredictor | NumpyTextPredictor | None:
    """The torch-free predictor of a model folder's ``model.onnx`` or of an ONNX file with ``config.json`` beside it,
    where onnxruntime is installed and :meth:`NumpyPredictor.from_config` (a text model's:
    :meth:`NumpyTextPredictor.from_config`) takes the model; ``None`` otherwise, and for anything wrong with the files:
    the torch path then runs, or says what is wrong in its own words."""
    path = Path(model_path).expanduser()
    onnx = path / ONNX if path.is_dir() else path
    if mnist_style or onnx.suffix != ".onnx" or not onnx.is_file() or not (onnx.parent / CONFIG).is_file():
        return None
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    try:
        config = read_config(onnx.parent)
        preprocessing = folder_preprocessing(onnx.parent, config)
        kind = NumpyTextPredictor if is_text(preprocessing) else NumpyPredictor
        return kind.from_config(onnx, config, preprocessing)
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
