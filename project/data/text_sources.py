"""Where texts come from, read as data: labelled texts (a CSV or JSON Lines file, or a folder of ``.txt`` files per
class) and a raw corpus (files and folders of ``.txt``, streamed line by line), and the tokenizer a text data module
uses (:func:`text_tokenizer`: a file, a model folder, a checkpoint of a text run, or one trained on the texts and kept
in the cache folder).

Every refusal is one line naming the file (and the line, the column or the option) and what is allowed.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch

from project.data.cache import digest
from project.data.tokenizer import TextTokenizer
from project.errors import DataNotFoundError, UserInputError, first_line
from project.files.atomic import written_whole

_TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
"""The labelled-text files by suffix: CSV (or tab-separated) with a header line, or JSON Lines (one object a line)."""
_LONGEST_LINE = 1 << 20
"""A corpus is read at most this many characters at a time: a file without line breaks streams too."""
_INTEGER = re.compile(r"\s*\d+\s*")


def located(name: str, folder: Path, option: str) -> Path:
    """The file or folder ``name`` (relative to ``folder``: ``data.data_dir``, else the current folder), refused in
    one line when it is not there."""
    path = folder / Path(name).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"data.{option}: {path.resolve()} does not exist")
    return path


def read_labelled(path: Path, text_column: str, label_column: str, option: str) -> tuple[list[str], list[Any]]:
    """The texts and their labels (as written: class names, or integers) of a labelled source: a folder of class
    sub-folders of ``.txt`` files (one text a file; the label is the folder's name), or a CSV / TSV / JSON Lines file
    with the columns ``text_column`` and ``label_column``. An empty text or label is refused with its place."""
    if path.is_dir():
        texts, labels = _class_folders(path, option)
    else:
        kind = _TABLE_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise UserInputError(
                f"data.{option}: {path} is not a folder of class sub-folders, nor a labelled-text file ("
                f"{', '.join(_TABLE_SUFFIXES)})"
            )
        reader = _json_lines if kind == "jsonl" else _table_rows
        texts, labels = reader(path, text_column, label_column, "\t" if kind == "tsv" else ",")
    if not texts:
        raise UserInputError(f"data.{option}: {path} holds no texts")
    return texts, labels


def _class_folders(folder: Path, option: str) -> tuple[list[str], list[str]]:
    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UserInputError(
            f"data.{option}: {folder} has no class sub-folders; expected {folder}/<class name>/<text>.txt, or a "
            f"labelled-text file ({', '.join(_TABLE_SUFFIXES)})"
        )
    texts, labels = [], []
    for name in classes:
        files = sorted((folder / name).glob("*.txt"))
        if not files:
            raise UserInputError(f"data.{option}: the class folder {folder / name} has no .txt files")
        for file in files:
            texts.append(_checked_text(_read_text(file), str(file)))
            labels.append(name)
    return texts, labels


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserInputError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def _checked_text(text: Any, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise UserInputError(f"{where}: the text is empty" if isinstance(text, str) else f"{where}: not a text")
    return text


def _checked_label(label: Any, where: str, column: str) -> Any:
    if label is None or isinstance(label, bool | float | list | dict) or (isinstance(label, str) and not label.strip()):
        raise UserInputError(f"{where}: the label ({column}) must be a class name or an integer, got {label!r}")
    return label.strip() if isinstance(label, str) else label


def _table_rows(path: Path, text_column: str, label_column: str, delimiter: str) -> tuple[list[str], list[Any]]:
    texts, labels = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file, delimiter=delimiter)
            header = [name.strip() for name in reader.fieldnames or []]
            _check_columns(path, header, text_column, label_column)
            for row in reader:
                row = {(key or "").strip(): value for key, value in row.items()}
                where = f"{path} line {reader.line_num}"
                texts.append(_checked_text(row.get(text_column) or "", where))
                labels.append(_checked_label(row.get(label_column), where, label_column))
    except UnicodeDecodeError as error:
        raise UserInputError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise UserInputError(f"{path}: not a CSV file this can read ({error})") from None
    return texts, labels


def _check_columns(where: str | Path, columns: list[str], text_column: str, label_column: str) -> None:
    missing = [f"{name} (data.{option})" for name, option in ((text_column, "text_column"),
               (label_column, "label_column")) if name not in columns]  # fmt: skip
    if missing:
        has = ", ".join(columns) if columns else "none"
        raise UserInputError(f"{where} has no column {' and '.join(missing)}: its columns are {has}")


def _json_lines(path: Path, text_column: str, label_column: str, delimiter: str) -> tuple[list[str], list[Any]]:
    texts, labels = [], []
    with path.open(encoding="utf-8-sig") as file:
        try:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                where = f"{path} line {number}"
                try:
                    row = json.loads(line)
                except ValueError as error:
                    raise UserInputError(f"{where}: not JSON ({first_line(error)})") from None
                if not isinstance(row, dict):
                    raise UserInputError(f"{where}: each line must be a JSON object with {text_column}, {label_column}")
                _check_columns(where, list(row), text_column, label_column)
                texts.append(_checked_text(row[text_column], where))
                labels.append(_checked_label(row[label_column], where, label_column))
        except UnicodeDecodeError as error:
            raise UserInputError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return texts, labels


def class_indices(train: list[Any], test: list[Any] | None, where: str) -> tuple[list[str] | None, list, list | None]:
    """Class names and the labels as class indices: integers (JSON numbers, or text of digits alone) are the indices
    themselves (no names; as many classes as the largest plus one); any other label is a class name, the classes
    being the training labels' names sorted. ``test``'s labels must be classes of the training labels'."""
    every = [*train, *(test or [])]
    if all(isinstance(label, int) or _INTEGER.fullmatch(str(label)) for label in every):
        return None, [int(label) for label in train], None if test is None else [int(label) for label in test]
    names = sorted({str(label) for label in train})
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(label) for label in test or []} - set(index))
    if unknown:
        raise UserInputError(
            f"{where}: the test labels {unknown[:10]} are no class of the training texts ({names[:10]})"
        )
    test_indices = None if test is None else [index[str(label)] for label in test]
    return names, [index[str(label)] for label in train], test_indices


def corpus_files(entries: str | list[str], folder: Path) -> list[Path]:
    """The text files of ``data.files``: each entry a file, or a folder whose ``.txt`` files (at any depth, sorted)
    are taken; refused when an entry is missing or nothing is found."""
    if isinstance(entries, str):
        entries = [entries]
    if not entries:
        raise UserInputError("data.files: give one or more text files or folders of .txt files")
    paths: list[Path] = []
    for entry in entries:
        path = located(entry, folder, "files")
        found = sorted(file for file in path.rglob("*.txt") if file.is_file()) if path.is_dir() else [path]
        if not found:
            raise UserInputError(f"data.files: {path} holds no .txt files")
        paths += found
    if not any(path.stat().st_size for path in paths):
        raise UserInputError(f"data.files: the corpus is empty (every file of {', '.join(entries)} has 0 bytes)")
    return paths


def files_stamp(paths: list[Path]) -> str:
    """What a corpus was read from: each file's resolved path, size and modification time (nanoseconds)."""
    stamps = [f"{path.resolve()}\0{path.stat().st_size}\0{path.stat().st_mtime_ns}" for path in paths]
    return digest(*stamps)


def corpus_lines(paths: list[Path]) -> Iterator[str]:
    """Every line of the corpus files, in order, read as a stream (a line longer than :data:`_LONGEST_LINE`
    characters in pieces): a corpus larger than memory goes through."""
    for path in paths:
        with path.open(encoding="utf-8-sig") as file:
            try:
                while line := file.readline(_LONGEST_LINE):
                    yield line
            except UnicodeDecodeError as error:
                raise UserInputError(f"data.files: {path} is not UTF-8 text ({error.reason})") from None


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold a lock file beside ``path`` while the block runs: one process at a time builds what is kept there (the
    others wait, then find it built). Where the file system takes no locks, the block runs unlocked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        with suppress(OSError):
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


_ALLOWED = (
    "a tokenizer.json, a Hugging Face model folder (tokenizer.json or vocab.txt), or a checkpoint (.ckpt) of a text run"
)


def text_tokenizer(
    option: str | None, vocab_size: int, texts: Callable[[], Iterable[str]], key: str, cache_dir: Path
) -> TextTokenizer:
    """The tokenizer of ``data.tokenizer``: read from a file, a model folder or a text run's checkpoint; ``None``: a
    WordPiece of ``vocab_size`` trained on ``texts()`` (what ``key`` stands for), kept in ``cache_dir`` and found there
    by later runs (training one again gives another: the ``tokenizers`` library's training is not reproducible)."""
    if option is None:
        return _trained(vocab_size, texts, key, cache_dir)
    path = Path(option).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"data.tokenizer: {path.resolve()} does not exist; give {_ALLOWED}")
    if path.is_file() and path.suffix in (".ckpt", ".pt", ".pth"):
        return TextTokenizer.from_json(_recorded_tokenizer(path))
    try:
        return TextTokenizer.read(path)
    except UserInputError as error:
        raise UserInputError(f"data.tokenizer: {path} is none of {_ALLOWED} ({first_line(error)})") from None


def recorded_preprocessing(path: Path, option: str) -> Any:
    """What a checkpoint records of its data's preprocessing (``preprocessing``: a text run's holds its tokenizer),
    read as data (``weights_only``, memory-mapped); refused, naming ``option``, when ``path`` is not such a file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # UnpicklingError for pickled objects, RuntimeError for other files
        raise UserInputError(
            f"{option}: {path} is not a checkpoint that loads with torch.load(weights_only=True) ({first_line(error)})"
        ) from None
    return checkpoint.get("preprocessing") if isinstance(checkpoint, dict) else None


def _recorded_tokenizer(path: Path) -> str:
    """The tokenizer JSON a checkpoint of a text run records (``preprocessing["tokenizer"]``)."""
    preprocessing = recorded_preprocessing(path, "data.tokenizer")
    recorded = preprocessing.get("tokenizer") if isinstance(preprocessing, dict) else None
    if not isinstance(recorded, str):
        raise UserInputError(f"data.tokenizer: {path} is a checkpoint that records no tokenizer (not a text run's)")
    return recorded


def _trained(vocab_size: int, texts: Callable[[], Iterable[str]], key: str, cache_dir: Path) -> TextTokenizer:
    import tokenizers

    path = cache_dir.resolve() / f"tokenizer-{digest(key, str(vocab_size), tokenizers.__version__)[:16]}.json"
    with locked(path):
        if path.is_file():
            with suppress(UserInputError, OSError, UnicodeDecodeError):  # damaged: trained again
                return TextTokenizer.from_json(path.read_text(encoding="utf-8"))
        tokenizer = TextTokenizer.train(texts(), vocab_size)
        with written_whole(path, "w", encoding="utf-8") as file:
            file.write(tokenizer.to_json())
    return tokenizer
