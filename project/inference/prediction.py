"""Prediction on new image files, from a checkpoint or an ONNX export, with exactly the preprocessing of training
(``python -m project predict``: :func:`predict_files`).

The preprocessing (channels, size, mean and std per channel) and the names of the classes are read from the
checkpoint, which every training run writes them into (``TaskModule.on_save_checkpoint``), or from the ``config.json``
of a model folder (:mod:`project.inference.export`, :mod:`project.inference.model_folder`); nothing is configured
twice. Inputs are files, folders (searched
recursively) and glob patterns; a file that cannot be decoded is named and skipped.
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets.folder import IMG_EXTENSIONS

from project.data.decoding import ImageConversion, UndecodableImage, check_mnist_style
from project.data.in_memory import normalised
from project.errors import UserInputError, first_line, install_command
from project.files.atomic import written_whole
from project.files.tables import spreadsheet_safe
from project.tasks import Task
from project.training.checkpoints import allowed_class, read_checkpoint
from project.training.progress import Counting
from project.training.specs import metric_class

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


def checkpoint_preprocessing(checkpoint: dict[str, Any], source: Path) -> dict[str, Any]:
    """How the checkpoint's training prepared an image (its data module recorded it: :func:`checked_preprocessing`)."""
    if "preprocessing" not in checkpoint:
        raise UserInputError(f"{source} records no preprocessing: it was trained without a data module of the project")
    return checked_preprocessing(checkpoint["preprocessing"], source)


class Predictor:
    """Images in, the network's outputs out: a checkpoint's network, a model folder's, or an ONNX export run by
    onnxruntime. ``network`` is the PyTorch network (in eval mode) where one runs, ``None`` for ONNX; ``runs`` says
    which file runs (``model.onnx (onnxruntime)``, ``model.safetensors``, the checkpoint)."""

    def __init__(
        self,
        run: Callable[[Tensor], Tensor],
        task: Task,
        preprocessing: dict[str, Any],
        network: torch.nn.Module | None = None,
        runs: str = "",
    ) -> None:
        self.run = run
        self.task = task
        self.preprocessing = preprocessing
        self.network = network
        self.runs = runs
        style = preprocessing.get("mnist_style", False)  # the training images' own, or asked for (mnist_style)
        self.conversion = ImageConversion(preprocessing["channels"], preprocessing["image_size"], mnist_style=style)
        self.mean = torch.tensor(preprocessing["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(preprocessing["std"], dtype=torch.float32).view(-1, 1, 1)

    @classmethod
    def load(cls, model_path: str | Path, mnist_style: bool = False) -> Predictor:
        """The predictor of a model folder (:meth:`from_folder`: its ``model.onnx`` through onnxruntime when both are
        there, else its ``model.safetensors`` network), a checkpoint (``.ckpt``) or an ONNX file with ``config.json``
        beside it; ``mnist_style`` makes each image's digit look like MNIST's first (:mod:`project.data.digits`), for
        photos of digits and a network trained on MNIST."""
        path = Path(model_path).expanduser()
        if path.is_dir():
            predictor = cls.from_folder(path)
        elif not path.is_file():
            raise UserInputError(f"{path}: no such file or folder (give a model folder, a checkpoint .ckpt or a .onnx)")
        else:
            predictor = cls.from_onnx(path) if path.suffix == ".onnx" else cls.from_checkpoint(path)
        if mnist_style:  # refused for a network of RGB images, as data.mnist_style is
            check_mnist_style(predictor.conversion.channels)
            predictor.conversion = replace(predictor.conversion, mnist_style=True)
        return predictor

    @classmethod
    def from_checkpoint(cls, path: Path) -> Predictor:
        from project.training.task_module import TaskModule

        checkpoint = read_checkpoint(path)
        model = TaskModule.from_checkpoint(checkpoint, path).eval()

        @torch.no_grad()
        def run(images: Tensor) -> Tensor:
            return model(images)

        return cls(run, model.task, checkpoint_preprocessing(checkpoint, path), model.network, str(path))

    @classmethod
    def from_folder(cls, folder: Path, onnx: bool | None = None) -> Predictor:
        """A model folder's predictor (``python -m project export``'s folder). ``onnx``: ``True`` runs
        ``model.onnx`` (onnxruntime), ``False`` the network built from ``config.json`` and ``model.safetensors``
        (:func:`~project.inference.model_folder.load_network`); ``None`` prefers ONNX when the folder has it and
        onnxruntime is installed."""
        from project.inference.model_folder import WEIGHTS, load_network, read_config

        config = read_config(folder)
        preprocessing = checked_preprocessing(config["preprocessing"], Path(folder) / "config.json")
        task = _config_task(config, Path(folder) / "config.json")
        if onnx is None:
            onnx = (Path(folder) / "model.onnx").is_file() and importlib.util.find_spec("onnxruntime") is not None
        if onnx:
            return cls(onnx_runner(Path(folder) / "model.onnx"), task, preprocessing, None, "model.onnx (onnxruntime)")
        network = load_network(folder, config)
        return cls(torch.no_grad()(network), task, preprocessing, network, WEIGHTS)

    @classmethod
    def from_onnx(cls, path: Path) -> Predictor:
        """An ONNX file's predictor, with the ``config.json`` of its model folder beside it."""
        from project.inference.model_folder import read_config

        if not (path.parent / "config.json").is_file():
            raise UserInputError(f"{path}: config.json is missing beside it (python -m project export writes both)")
        config = read_config(path.parent)
        task = _config_task(config, path.parent / "config.json")
        preprocessing = checked_preprocessing(config["preprocessing"], path.parent / "config.json")
        return cls(onnx_runner(path), task, preprocessing, None, f"{path.name} (onnxruntime)")

    def image(self, path: Path) -> Tensor:
        """The file as the network saw its training images: converted, resized and normalised."""
        pixels = self.conversion.decode(path)
        return normalised(pixels, self.mean, self.std)

    def predict(
        self, paths: list[Path], batch_size: int = 256, progress: Callable[[int], None] | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """One row per readable file (``path`` and the task's columns), and a line for each file skipped;
        ``progress(n)`` is told of each batch of ``n`` files done."""
        rows, skipped = [], []
        names = self.preprocessing["class_names"]
        for start in range(0, len(paths), batch_size):
            images, kept = [], []
            for path in paths[start : start + batch_size]:
                try:
                    images.append(self.image(path))
                    kept.append(path)
                except UndecodableImage as error:
                    skipped.append(f"{error.path}: cannot be decoded ({error.reason})")
            if images:
                outputs = self.run(torch.stack(images))
                columns = self.task.prediction_rows(outputs, names)
                rows += [{"path": str(path), **row} for path, row in zip(kept, columns, strict=True)]
            if progress is not None:
                progress(len(paths[start : start + batch_size]))
        return rows, skipped


def _config_task(config: dict[str, Any], source: Path) -> Task:
    """The task a model folder's ``config.json`` records (its class from the allow-list, its options but its extra
    metrics: prediction computes none), bound to the network's outputs."""
    try:
        cls = allowed_class(config["task_class"], Task, "task", holder=str(source))
        options = {key: value for key, value in config["task_options"].items() if key != "metrics"}
        return cls(**options).bind(config["num_outputs"], metric_class)
    except UserInputError:  # a task class outside the allow-list, an option its task refuses: said as such
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserInputError(
            f"{source} is not the config.json python -m project export writes (truncated or edited?): "
            f"{first_line(error)}"
        ) from None


def onnx_runner(path: Path) -> Callable[[Tensor], Tensor]:
    """Images in, outputs out, through onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        needed = install_command("onnxruntime")
        raise UserInputError(f"onnxruntime runs ONNX files, and is not installed: {needed}") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, ... share no base but Exception
        raise UserInputError(f"{path} is not a readable ONNX model (truncated?): {first_line(error)}") from None
    input_name = session.get_inputs()[0].name
    return lambda images: torch.from_numpy(session.run(None, {input_name: images.numpy()})[0])


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
            found += sorted(p for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        elif Path(item).is_file():
            found.append(Path(item))
        else:
            raise UserInputError(f"{item}: no such file, folder or pattern")
    if not found:
        raise UserInputError(f"no image files in {', '.join(inputs)} (looked for {', '.join(IMG_EXTENSIONS)})")
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
    export (:meth:`Predictor.load`), and write
    the rows to the CSV file ``out``, which must not exist yet (:func:`write_csv`); ``skipping`` says each file that
    cannot be decoded.
    Returns how many rows, and the files skipped."""
    if batch_size < 1:
        raise UserInputError(f"batch_size: expected a positive integer, got {batch_size}")
    if out.exists() or out.is_symlink():  # a result is never overwritten
        raise UserInputError(f"--out {out} exists already: name another file (or remove it)")
    paths = image_paths(inputs)
    counting = Counting("predict", "images", len(paths))  # predict: 512/2000 images, every few seconds
    rows, skipped = Predictor.load(model_path, mnist_style).predict(paths, batch_size, counting)
    counting.end()
    for line in skipped:
        skipping(line)
    if not rows:
        raise UserInputError(f"none of the {len(paths)} files could be decoded: nothing to predict")
    write_csv(rows, out)
    return len(rows), skipped


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
