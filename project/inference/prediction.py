"""Prediction on new image files (or texts) with torch, from a checkpoint, a model folder or an ONNX export, with
exactly the preprocessing of training (:class:`Predictor`; a text model's: :class:`TextPredictor`; the ``predict``
command and its CSV: :mod:`project.inference.prediction_files`, which runs an ONNX file without torch where it can:
:mod:`project.inference.numpy_predictor`).

The preprocessing (channels, size, mean and std per channel) and the names of the classes are read from the
checkpoint, which every training run writes them into (``TaskModule.on_save_checkpoint``), or from the ``config.json``
of a model folder (:mod:`project.inference.export`, :mod:`project.inference.model_folder`); nothing is configured
twice. A file that cannot be decoded is named and skipped. A text model's record holds its tokenizer and its
``max_length`` (:func:`~project.inference.prediction_files.is_text`): its texts are tokenised as in training
(truncated to ``max_length``) and padded per batch with 0, from which the network derives its attention mask.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from project.data.decoding import ImageConversion, UndecodableImage, check_mnist_style
from project.data.in_memory import normalised
from project.data.tokenizer import TextTokenizer
from project.errors import UserInputError, first_line
from project.inference.model_folder import CONFIG, ONNX, WEIGHTS, load_network, read_config
from project.inference.numpy_predictor import onnx_session
from project.inference.prediction_files import checked_preprocessing, folder_preprocessing, is_text
from project.tasks import Task
from project.training.checkpoints import allowed_class, read_checkpoint
from project.training.specs import metric_class


def checkpoint_preprocessing(checkpoint: dict[str, Any], source: Path) -> dict[str, Any]:
    """How the checkpoint's training prepared an image or a text (its data module recorded it:
    :func:`checked_preprocessing`)."""
    if "preprocessing" not in checkpoint:
        raise UserInputError(f"{source} records no preprocessing: it was trained without a data module of the project")
    return checked_preprocessing(checkpoint["preprocessing"], source)


class Predictor:
    """Images in, the network's outputs out: a checkpoint's network, a model folder's, or an ONNX export run by
    onnxruntime. ``network`` is the PyTorch network (in eval mode) where one runs, ``None`` for ONNX; ``runs`` says
    which file runs (``model.onnx (onnxruntime)``, ``model.safetensors``, the checkpoint). Its constructors
    (:meth:`load`, ...) give a :class:`TextPredictor` for a text model."""

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
        self.prepare(preprocessing)

    @classmethod
    def _made(
        cls, run: Callable[[Tensor], Tensor], task: Task, preprocessing: dict[str, Any], *others: Any
    ) -> Predictor:
        """``cls(run, task, preprocessing, *others)``, or a :class:`TextPredictor` for a text model's preprocessing."""
        return (TextPredictor if is_text(preprocessing) else cls)(run, task, preprocessing, *others)

    def prepare(self, preprocessing: dict[str, Any]) -> None:
        """Set up what turns an input into what the network takes: an image's conversion, mean and std."""
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
        if mnist_style and isinstance(predictor, TextPredictor):
            raise UserInputError(f"--mnist_style prepares images of digits: {path} is a text model")
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

        return cls._made(run, model.task, checkpoint_preprocessing(checkpoint, path), model.network, str(path))

    @classmethod
    def from_folder(cls, folder: Path, onnx: bool | None = None) -> Predictor:
        """A model folder's predictor (``python -m project export``'s folder). ``onnx``: ``True`` runs
        ``model.onnx`` (onnxruntime), ``False`` the network built from ``config.json`` and ``model.safetensors``
        (:func:`~project.inference.model_folder.load_network`); ``None`` prefers ONNX when the folder has it and
        onnxruntime is installed."""
        config = read_config(folder)
        preprocessing = folder_preprocessing(folder, config)
        task = _config_task(config, Path(folder) / "config.json")
        if onnx is None:
            onnx = (Path(folder) / ONNX).is_file() and importlib.util.find_spec("onnxruntime") is not None
        if onnx:
            return cls._made(onnx_runner(Path(folder) / ONNX), task, preprocessing, None, f"{ONNX} (onnxruntime)")
        network = load_network(folder, config)
        return cls._made(torch.no_grad()(network), task, preprocessing, network, WEIGHTS)

    @classmethod
    def from_onnx(cls, path: Path) -> Predictor:
        """An ONNX file's predictor, with the ``config.json`` of its model folder beside it."""
        if not (path.parent / CONFIG).is_file():
            raise UserInputError(f"{path}: config.json is missing beside it (python -m project export writes both)")
        config = read_config(path.parent)
        task = _config_task(config, path.parent / "config.json")
        preprocessing = folder_preprocessing(path.parent, config)
        return cls._made(onnx_runner(path), task, preprocessing, None, f"{path.name} (onnxruntime)")

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


class TextPredictor(Predictor):
    """Texts in, the network's outputs out (a text model's :class:`Predictor`): each text tokenised with the
    tokenizer its training recorded (``[CLS] text [SEP]``, truncated to ``max_length``), a batch padded with 0 to its
    longest text (:meth:`ids`); ``tokenizer`` is the :class:`~project.data.tokenizer.TextTokenizer`."""

    def prepare(self, preprocessing: dict[str, Any]) -> None:
        """Set up the tokenizer (from its JSON) and the longest sequence."""
        self.tokenizer = TextTokenizer.from_json(preprocessing["tokenizer"])
        self.max_length = preprocessing["max_length"]

    def ids(self, texts: list[str]) -> Tensor:
        """The texts as the network takes them: token ids, ``(len(texts), longest)``, padded with 0."""
        return self.tokenizer.pad(self.tokenizer.encode(texts, self.max_length))

    def predict(
        self, texts: list[str], batch_size: int = 256, progress: Callable[[int], None] | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """One row per text (``text`` and the task's columns), and no line skipped (``predict``'s files skip empty
        lines before: :func:`~project.inference.prediction_files.text_lines`); ``progress(n)`` is told of each batch
        of ``n`` texts done."""
        rows = []
        names = self.preprocessing["class_names"]
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            columns = self.task.prediction_rows(self.run(self.ids(batch)), names)
            rows += [{"text": text, **row} for text, row in zip(batch, columns, strict=True)]
            if progress is not None:
                progress(len(batch))
        return rows, []


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
    """Images (or token ids) in, outputs out, through onnxruntime on the CPU
    (:func:`~project.inference.numpy_predictor.onnx_session`)."""
    session = onnx_session(path)
    input_name = session.get_inputs()[0].name
    return lambda images: torch.from_numpy(session.run(None, {input_name: images.numpy()})[0])
