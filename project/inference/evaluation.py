"""Evaluation reports: every metric of a checkpoint on one data split, as JSON, Markdown and a confusion-matrix PNG
(``python -m project evaluate``: :func:`evaluate_checkpoint`).

The numbers come from the model's task (:meth:`project.tasks.Task.report`, torchmetrics), computed once over all
the predictions of the split (not averaged over batches). A text model's report (its data module has a tokenizer)
adds the worst-classified texts of the split: their text, true and predicted class, and loss.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from project.data import ImageDataModule
from project.errors import DataNotFoundError, UserInputError, first_line
from project.files.atomic import written_folder
from project.inference.counting import Counting
from project.inference.prediction_files import checked_preprocessing
from project.reports.figures import confusion_figure
from project.reports.texts import WorstExamples, markdown_table, text_rows
from project.tasks import Task
from project.training.checkpoints import allowed_class, read_checkpoint
from project.training.task_module import TaskModule

SPLITS = {"train": "fit", "val": "validate", "test": "test"}
"""The splits a report can be of, and the stage that sets each up (``python -m project evaluate --split``)."""


WORST_TEXTS = 20
"""How many of the worst-classified texts a text model's report lists."""


@dataclass
class Predictions:
    """The task's scores on a split (logits, probabilities or values) and the targets; asked for, the examples of
    highest loss (their losses, inputs, targets and decisions)."""

    scores: Tensor
    targets: Tensor
    worst: WorstExamples | None = None


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Iterable[tuple[Tensor, Tensor]], task: Task, worst: int = 0) -> Predictions:
    """Run ``model`` (in eval mode) over ``loader``'s normalised batches (or token ids); scores as the task's metrics
    take them, and the ``worst`` examples of highest loss."""
    model.eval()
    scores, targets = [], []
    kept = WorstExamples(worst) if worst else None
    for inputs, batch_targets in loader:
        outputs = model(inputs)
        scores.append(task.scores(outputs))
        targets.append(batch_targets)
        if kept is not None:
            kept.update(task.example_losses(outputs, batch_targets), inputs, batch_targets, task.decisions(outputs))
    return Predictions(torch.cat(scores), torch.cat(targets), kept)


def compute_report(predictions: Predictions, task: Task, class_names: list[str]) -> dict[str, Any]:
    """All metrics of ``predictions`` as plain values: overall, per class (or label), confusion matrix."""
    report = {"task": task.name, "count": len(predictions.targets)}
    report.update(task.report(predictions.scores, predictions.targets, class_names))
    report["overall"].update(task.extra_report(predictions.scores, predictions.targets))  # the task's extra metrics
    if "per_class" in report or "confusion_matrix" in report:
        report["class_names"] = class_names
    return report


def _markdown_report(report: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", f"{report['count']} examples, task: {report['task']}", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in report["overall"].items()]
    if "per_class" in report:
        columns = [key for key in report["per_class"][0] if key != "class"]
        lines += ["", "| class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for row in report["per_class"]:
            cells = [f"{row[key]:.4f}" if isinstance(row[key], float) else str(row[key]) for key in columns]
            lines.append(f"| {row['class']} | " + " | ".join(cells) + " |")
    if "confusion_matrix" in report:
        names = report["class_names"]
        lines += ["", "Confusion matrix (rows: true class, columns: predicted class)", ""]
        lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [
            f"| {name} | " + " | ".join(str(n) for n in row) + " |"
            for name, row in zip(names, report["confusion_matrix"], strict=True)
        ]
    if "worst_texts" in report:
        lines += ["", "The worst-classified texts (highest loss first)", "", markdown_table(report["worst_texts"])]
    return "\n".join(lines) + "\n"


def _write_reports(report: dict[str, Any], folder: Path, title: str) -> list[Path]:
    """``metrics.json``, ``report.md`` and (where there is one) ``confusion_matrix.png`` in ``folder``: all of them or
    none (:func:`~project.files.atomic.written_folder`), never a new report beside an old one's figure."""
    names = ["metrics.json", "report.md"] + (["confusion_matrix.png"] if "confusion_matrix" in report else [])
    with written_folder(folder) as staging:
        (staging / names[0]).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (staging / names[1]).write_text(_markdown_report(report, title), encoding="utf-8")
        if "confusion_matrix" in report:
            confusion_figure(report["confusion_matrix"], report["class_names"], title).savefig(staging / names[2])
    return [folder / name for name in names]


_FROM_THE_USER = ("cache_dir", "cache_shared")
"""Data module arguments a checkpoint never sets when it is rebuilt: where decoded images are cached, and whether
other users' cache files are opened, are the user's (their defaults: ``$PROJECT_CACHE_DIR``, your own files only)."""


def evaluate_checkpoint(
    checkpoint_path: Path, split: str = "test", data_dir: str | None = None, out: Path | None = None
) -> tuple[str, list[Path]]:
    """Report on ``checkpoint_path`` over ``split`` of the data module it was trained with (``data_dir`` points it
    elsewhere): the files written (:func:`_write_reports`) into ``out``, by default
    ``<run folder>/evaluation/<split>-<checkpoint name>/``; returns the report as Markdown, and the files."""
    if split not in SPLITS:
        raise UserInputError(f"--split: {split!r}; choose from {', '.join(SPLITS)}")
    checkpoint = read_checkpoint(checkpoint_path)
    model = TaskModule.from_checkpoint(checkpoint, checkpoint_path)
    if model.task.name == "masked_tokens":
        run_config = Path(checkpoint_path).parent.parent / "config.yaml"
        raise UserInputError(
            f"{checkpoint_path} is a masked-token (pretraining) checkpoint: evaluate reports labelled tasks. Its "
            "perplexity and masked-token accuracy are its validation metrics (val/perplexity, val/acc in TensorBoard; "
            f"again: python -m project validate --config {run_config} --ckpt_path {checkpoint_path}); fine-tune it on "
            "labelled texts and evaluate that checkpoint"
        )
    data = data_module_from_checkpoint(checkpoint, data_dir=data_dir, read_from=checkpoint_path)
    try:
        data.prepare_data()  # never a download (data_module_from_checkpoint): the data_dir is the checkpoint's
    except DataNotFoundError as error:
        raise DataNotFoundError(
            f"{error}\n  (evaluate never downloads: give --data.data_dir DIR, or download the data once with the "
            "python -m project fit run of this dataset)"
        ) from None
    data.setup(SPLITS[split])
    batches = data.normalised_batches(split)  # in order, unaugmented: in memory, from the cache or a DataLoader
    dataset = {"train": data.train_set, "val": data.val_set, "test": data.test_set}[split]
    text = data.tokenizer is not None
    counting = Counting("evaluate", f"{split} {'texts' if text else 'images'}", len(dataset))  # every few seconds
    predictions = predict(model, counting.through(batches), model.task, WORST_TEXTS if text else 0)
    counting.end()
    report = compute_report(predictions, model.task, data.class_names)
    if predictions.worst is not None and predictions.worst.kept is not None:
        losses, ids, targets, decided = predictions.worst.kept
        report["worst_texts"] = text_rows(data.tokenizer, ids, targets, decided, model.task, data.class_names, losses)
    report["checkpoint"], report["split"] = str(checkpoint_path), split
    folder = out or checkpoint_path.resolve().parent.parent / "evaluation" / f"{split}-{checkpoint_path.stem}"
    title = f"{data.dataset_name}: {checkpoint_path.name} on the {split} split"
    return _markdown_report(report, title), _write_reports(report, folder, title)


def data_module_from_checkpoint(
    checkpoint: dict[str, Any], read_from: Path | None = None, **overrides: Any
) -> ImageDataModule:
    """Rebuild the data module a checkpoint was trained with (its class and arguments are recorded in it:
    :mod:`project.data.recording`); ``overrides`` replace recorded arguments (``data_dir``) or give those a checkpoint
    cannot hold (``train_dataset=`` a dataset built in Python). A text module that takes a ``tokenizer`` is given the
    one the checkpoint records (``read_from``: the checkpoint's file), never one found in a cache or trained again.

    The class must be one of the project's data modules (an :class:`ImageDataModule` subclass already imported):
    a checkpoint cannot make this call a function of its choosing. Its arguments are plain values, and a dataset
    named in the config by class path is rebuilt from the allow-list of ``Dataset`` subclasses likewise
    (:func:`_built_argument`). Nothing is downloaded (``download=False`` where the class takes it: a received
    checkpoint names a ``data_dir`` and would write there), and :data:`_FROM_THE_USER` are left to their defaults.
    """
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    if class_path is None:
        raise UserInputError(
            "the checkpoint does not record its data module (it was not written by `python -m project`)"
        )
    data_class = allowed_class(class_path, ImageDataModule, "data module")
    parameters = inspect.signature(data_class).parameters
    arguments = {key: value for key, value in hparams.items() if not key.startswith("_") and key not in _FROM_THE_USER}
    if _takes_argument(data_class, "download"):
        arguments["download"] = False
    recorded = "tokenizer" in (checkpoint.get("preprocessing") or {})
    if read_from is not None and recorded and _takes_argument(data_class, "tokenizer"):
        arguments["tokenizer"] = str(read_from)
    arguments.update({key: value for key, value in overrides.items() if value is not None})
    for name, base in data_class.class_arguments.items():
        if isinstance(arguments.get(name), dict):
            arguments[name] = _built_argument(arguments[name], base, f"data.{name}")
    missing = [name for name in data_class.unrecorded_arguments if name in parameters and name not in arguments]
    if any(parameters[name].default is inspect.Parameter.empty for name in missing):
        raise UserInputError(
            f"the checkpoint does not record data.{missing[0]} of {class_path}: it was a Python object (built in "
            f"Python, or before such arguments named by class path were recorded); give it in Python: "
            f"project.inference.evaluation.data_module_from_checkpoint(checkpoint, {missing[0]}=...)"
        )
    try:
        inspect.signature(data_class).bind(**arguments)
        data = data_class(**arguments)
    except TypeError as error:
        raise UserInputError(f"the checkpoint's data module arguments do not fit {class_path}: {error}") from None
    stated = checkpoint.get("preprocessing")
    if data.awaiting_normalisation and stated:  # the backbone's, recorded when it trained
        stated = checked_preprocessing(stated, "the checkpoint")
        data.adopt_normalisation(stated["mean"], stated["std"])
    return data


def _takes_argument(cls: type, name: str) -> bool:
    """Whether ``cls(name=...)`` is accepted: a parameter of its own, or of a base class its ``**kwargs`` go to."""
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        if name in parameters:
            return True
        if not any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
            return False
    return False


def _built_argument(spec: dict[str, Any], base: type, option: str) -> Any:
    """An argument of the data module that the config gave by class path (a dataset), rebuilt from the checkpoint's
    ``{class_path, init_args}``: the class from the allow-list of ``base``'s subclasses already imported (a trusted
    module's: ``--trust``), its arguments plain values; one that names a class itself is refused, since only the
    config's parser may build that."""
    init_args = spec.get("init_args") or {}
    inner = next((key for key, value in init_args.items() if isinstance(value, dict) and "class_path" in value), None)
    if inner is not None:
        raise UserInputError(
            f"{option}.init_args.{inner} names a class ({init_args[inner]['class_path']}): a checkpoint rebuilds "
            f"{option} from plain arguments only; build that object inside {spec.get('class_path')} from plain values"
        )
    cls = allowed_class(spec.get("class_path"), base, option)
    try:
        return cls(**init_args)
    except Exception as error:  # the user's own class: whatever it raises, said in one line
        raise UserInputError(
            f"{option}: {spec['class_path']}({init_args}) cannot be built: {type(error).__name__}: {first_line(error)}"
        ) from None
