"""An exported model's ONNX file run with onnxruntime, numpy and PIL alone (:class:`NumpyPredictor`): ``python -m
project predict`` from a model folder or a ``model.onnx`` starts in a fraction of a second, without torch, Lightning
or the training code (``import torch`` alone takes one to two seconds).

It gives the rows :class:`project.inference.prediction.Predictor` gives, to the digit: the same decoding (PIL,
converted to the network's channels, resized bilinear with PIL's antialiasing, as ``torchvision``'s ``resize`` of a
PIL image does), the same float32 normalisation (/255, minus mean, over std), the same onnxruntime session, and the
task's decisions and probabilities (computed in float64 on both paths, so that the CSV's six digits agree:
``tests/test_numpy_predictor.py``). It takes the project's own four tasks and images without MNIST-style
preprocessing; anything else (a task of your own, ``--mnist_style``) goes through the torch path
(:func:`project.inference.prediction_files.predict_files` chooses). A text model's ONNX file runs likewise
(:class:`NumpyTextPredictor`): its ``tokenizer.json`` through the ``tokenizers`` library, cut and padded as
:meth:`project.data.tokenizer.TextTokenizer.encode` and ``pad`` do (``tests/test_text_inference.py`` keeps the two
the same).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from project.errors import UserInputError, first_line, install_command

TASK_OPTIONS = {
    "project.tasks.Multiclass": ("label_smoothing", "class_weights", "metrics"),
    "project.tasks.Binary": ("pos_weight", "threshold", "metrics"),
    "project.tasks.Multilabel": ("pos_weight", "threshold", "metrics"),
    "project.tasks.Regression": ("metrics",),
}
"""The tasks whose rows this module computes (as ``config.json`` names them), and the options each takes; only
``threshold`` changes a prediction."""


def onnx_session(path: Path) -> Any:
    """An onnxruntime session of the ONNX file, on the CPU; one line when onnxruntime is not installed or the file is
    not a readable model."""
    try:
        import onnxruntime
    except ImportError:
        needed = install_command("onnxruntime")
        raise UserInputError(f"onnxruntime runs ONNX files, and is not installed: {needed}") from None
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, ... share no base but Exception
        raise UserInputError(f"{path} is not a readable ONNX model (truncated?): {first_line(error)}") from None


@dataclass(frozen=True)
class TaskRows:
    """What a prediction file says of each image for one of the project's tasks (``kind``: ``multiclass``,
    ``binary``, ``multilabel``, ``regression``), as the task's ``prediction_rows`` says it, from numpy outputs."""

    kind: str
    class_names: list[Any]
    threshold: float = 0.5

    def __call__(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        if self.kind == "regression":
            return [{"predicted": value} for value in outputs[:, 0].astype(np.float32).tolist()]
        names, logits = self.class_names, outputs.astype(np.float64)
        cut = np.float32(math.log(self.threshold / (1 - self.threshold)))  # compared in float32, as torch does
        if self.kind == "multiclass":
            exps = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities, columns = exps / exps.sum(axis=1, keepdims=True), names
            words = [names[int(index)] for index in outputs.argmax(axis=1)]
        elif self.kind == "binary":
            probabilities, columns = 1 / (1 + np.exp(-logits[:, :1])), names[1:2]
            words = [names[int(decision)] for decision in outputs[:, 0] > cut]
        else:
            probabilities, columns = 1 / (1 + np.exp(-logits)), names
            present = [[name for name, flag in zip(names, row, strict=True) if flag] for row in outputs > cut]
            words = [",".join(labels) or "none" for labels in present]
        return [
            {"predicted": word, **{f"p_{name}": p for name, p in zip(columns, row, strict=True)}}
            for word, row in zip(words, probabilities.tolist(), strict=True)
        ]


def _task_rows(config: dict[str, Any]) -> TaskRows | None:
    """The rows of the task a model folder's ``config.json`` records, where it is one of :data:`TASK_OPTIONS` with
    its own options and outputs that fit its class names; ``None`` otherwise (the torch path then builds the task,
    or says what is wrong)."""
    options, names, outputs = config["task_options"], config["preprocessing"]["class_names"], config["num_outputs"]
    allowed = TASK_OPTIONS.get(config["task_class"]) if isinstance(config["task_class"], str) else None
    if allowed is None or not isinstance(options, dict) or not set(options) <= set(allowed):
        return None
    kind = config["task_class"].rsplit(".", 1)[1].lower()
    threshold = options.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        return None
    fits = {"multiclass": len(names), "multilabel": len(names), "binary": 1, "regression": 1}[kind] == outputs
    if not fits or isinstance(outputs, bool) or (kind == "binary" and len(names) != 2):
        return None
    return TaskRows(kind, names, float(threshold))


class NumpyPredictor:
    """Images in, rows out, through an ONNX file in onnxruntime, with numpy and PIL: what
    :meth:`project.inference.prediction.Predictor.predict` gives for the same model folder, without torch. ``runs``
    says which file runs; ``preprocessing`` is the ``config.json``'s record."""

    def __init__(self, session: Any, rows: TaskRows, preprocessing: dict[str, Any], runs: str = "") -> None:
        self.session, self.rows, self.preprocessing, self.runs = session, rows, preprocessing, runs
        self.input_name = session.get_inputs()[0].name
        self.mode = "L" if preprocessing["channels"] == 1 else "RGB"
        self.size = preprocessing["image_size"]
        self.mean = np.array(preprocessing["mean"], dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.array(preprocessing["std"], dtype=np.float32).reshape(-1, 1, 1)

    @classmethod
    def from_config(cls, path: Path, config: dict[str, Any], preprocessing: dict[str, Any]) -> NumpyPredictor | None:
        """The predictor of the ONNX file ``path`` with its folder's ``config.json`` (read, and its preprocessing
        checked: :func:`project.inference.prediction_files.checked_preprocessing`); ``None`` where it takes neither
        the task (:func:`_task_rows`) nor the preprocessing (MNIST style)."""
        rows = _task_rows(config)
        if rows is None or preprocessing.get("mnist_style", False):
            return None
        return cls(onnx_session(path), rows, preprocessing, f"{path.name} (onnxruntime)")

    def pixels(self, path: Path) -> np.ndarray:
        """The file's uint8 pixels, ``(channels, size, size)``, as
        :meth:`project.data.decoding.ImageConversion.decode` gives them."""
        with Image.open(path) as image:
            image.load()  # decodes everything: a truncated file fails here
            converted = image.convert(self.mode)
        array = np.asarray(converted.resize((self.size, self.size), Image.Resampling.BILINEAR))
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def image(self, path: Path) -> np.ndarray:
        """The file as the network saw its training images: converted, resized and normalised (float32)."""
        scaled = self.pixels(path).astype(np.float32) / np.float32(255)
        return (scaled - self.mean) / self.std

    def predict(
        self, paths: list[Path], batch_size: int = 256, progress: Callable[[int], None] | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """One row per readable file (``path`` and the task's columns), and a line for each file skipped;
        ``progress(n)`` is told of each batch of ``n`` files done."""
        rows, skipped = [], []
        for start in range(0, len(paths), batch_size):
            images, kept = [], []
            for path in paths[start : start + batch_size]:
                try:
                    images.append(self.image(path))
                    kept.append(path)
                except Exception as error:  # whatever PIL raises, as the torch path's decoding names it
                    skipped.append(f"{path}: cannot be decoded ({first_line(error)})")
            if images:
                outputs = self.session.run(None, {self.input_name: np.stack(images)})[0]
                rows += [{"path": str(path), **row} for path, row in zip(kept, self.rows(outputs), strict=True)]
            if progress is not None:
                progress(len(paths[start : start + batch_size]))
        return rows, skipped


class NumpyTextPredictor:
    """Texts in, rows out, through a text model's ONNX file in onnxruntime, with the ``tokenizers`` library and
    numpy: what :class:`project.inference.prediction.TextPredictor` gives, without torch. Each text is encoded
    ``[CLS] ... [SEP]``, cut to ``max_length`` ids with ``[SEP]`` kept last, and a batch padded with 0 to its longest
    (:meth:`ids`)."""

    def __init__(self, session: Any, rows: TaskRows, preprocessing: dict[str, Any], tokenizer: Any, runs: str = ""):
        self.session, self.rows, self.preprocessing, self.runs = session, rows, preprocessing, runs
        self.tokenizer, self.max_length = tokenizer, preprocessing["max_length"]
        self.sep_id = tokenizer.token_to_id("[SEP]")

    @classmethod
    def from_config(
        cls, path: Path, config: dict[str, Any], preprocessing: dict[str, Any]
    ) -> NumpyTextPredictor | None:
        """The predictor of the ONNX file ``path`` with its folder's ``config.json`` and the tokenizer's JSON in
        ``preprocessing`` (:func:`project.inference.prediction_files.folder_preprocessing`); ``None`` where it takes
        neither the task (:func:`_task_rows`) nor the tokenizer (not readable, no ``[PAD]`` = 0 or ``[SEP]``), or
        ``tokenizers`` is not installed: the torch path then says what is wrong."""
        rows = _task_rows(config)
        try:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(preprocessing["tokenizer"])
        except Exception:  # ImportError, or whatever the library raises of a document it cannot read
            return None
        if rows is None or tokenizer.token_to_id("[PAD]") != 0 or tokenizer.token_to_id("[SEP]") is None:
            return None
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(onnx_session(path), rows, preprocessing, tokenizer, f"{path.name} (onnxruntime)")

    def ids(self, texts: list[str]) -> np.ndarray:
        """The texts as the network takes them: int64 token ids ``(len(texts), longest)``, padded with 0."""
        cut = self.max_length
        encoded = [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]
        encoded = [ids if len(ids) <= cut else [*ids[: cut - 1], self.sep_id] for ids in encoded]
        batch = np.zeros((len(encoded), max(len(ids) for ids in encoded)), dtype=np.int64)
        for row, ids in enumerate(encoded):
            batch[row, : len(ids)] = ids
        return batch

    def predict(
        self, texts: list[str], batch_size: int = 256, progress: Callable[[int], None] | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """One row per text (``text`` and the task's columns), and no line skipped; ``progress(n)`` is told of each
        batch of ``n`` texts done."""
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            outputs = self.session.run(None, {self.session.get_inputs()[0].name: self.ids(batch)})[0]
            rows += [{"text": text, **row} for text, row in zip(batch, self.rows(outputs), strict=True)]
            if progress is not None:
                progress(len(batch))
        return rows, []
