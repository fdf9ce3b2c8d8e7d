"""The interface every task implements (see :mod:`project.tasks`)."""

from __future__ import annotations

import copy
import inspect
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from project.errors import UserInputError, first_line
from project.plain import plain
from project.trusted import HOW_TO_TRUST

MetricResolver = Callable[[str], type]
"""Turns an extra metric's class path into the class, refusing what is not allowed (the training module's
allow-list: a :class:`torchmetrics.Metric` subclass already imported); the tasks import no training code."""


@dataclass(frozen=True)
class TaskOption:
    """One option of a task (``--model.task_options.<name>``): its value when not given, which values it takes (for
    errors) and what it does."""

    default: Any
    allowed: str
    meaning: str


METRICS = TaskOption(
    {},
    "a mapping {name: {class_path: a torchmetrics Metric class, init_args: {...}}}",
    "extra metrics, logged as train/<name>, val/<name> and test/<name> and in evaluation reports; the task fills in "
    "num_classes or num_labels where the metric takes them and they are not given",
)
METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class Task:
    """One kind of prediction. Outputs are the network's raw outputs, shape (batch, ``num_outputs``).

    A subclass sets :attr:`name`, :attr:`monitor` and :attr:`summary`, and implements the methods below; defining it
    in a module of :mod:`project.tasks` registers it. Its :attr:`options` (``--model.task_options``) are read and
    checked by :meth:`configure`; :attr:`task_options` keeps every one of them as plain values (a checkpoint records
    them, and a task rebuilt from it takes them back).
    """

    name: ClassVar[str] = ""
    monitor: ClassVar[tuple[str, Literal["min", "max"]]]
    """The validation metric that picks the best checkpoint, and whether higher or lower is better."""
    summary: ClassVar[tuple[str, ...]]
    """The metrics the HParams tab shows as columns, besides the loss."""
    registry: ClassVar[dict[str, type[Task]]] = {}
    options: ClassVar[dict[str, TaskOption]] = {"metrics": METRICS}
    """The options the task takes, by name (every task takes ``metrics``; a subclass adds its own to these)."""
    outputs_meaning: ClassVar[str] = "the network's outputs"
    """What the network's outputs are, in words (an export's ``model.json`` says it)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Task.registry[cls.name] = cls

    def __init__(
        self, num_outputs: int, options: Mapping[str, Any] | None = None, resolve: MetricResolver | None = None
    ) -> None:
        expected = self.outputs_for(num_outputs)
        if num_outputs != expected or num_outputs < 1:
            raise UserInputError(f"a {self.name} task needs a network with {self.outputs_rule()}, got {num_outputs}")
        self.num_outputs = num_outputs
        given = plain(options or {})
        if not isinstance(given, dict):
            raise UserInputError(f"model.task_options must be a mapping of option names to values, got {options!r}")
        for key, value in given.items():
            if key not in self.options:
                raise UserInputError(self.unknown_option(key, value))
        self.task_options: dict[str, Any] = {
            key: copy.deepcopy(option.default) if given.get(key) is None else given[key]
            for key, option in self.options.items()
        }
        """Every option of the task with its value (given, or its default), as plain values."""
        self.placed: dict[tuple[Any, ...], Tensor] = {}
        self.configure(self.task_options)
        self.extra = self.extra_metric_specs(self.task_options["metrics"], resolve)
        """The extra metrics: their classes and the arguments they are built with."""

    def configure(self, options: dict[str, Any]) -> None:
        """Read and check the task's own options (every name of :attr:`options` is there, with its value)."""

    def unknown_option(self, key: str, value: Any) -> str:
        own = [name for name in self.options if name not in Task.options]
        every = "; ".join(f"{name} ({self.options[name].allowed})" for name in [*own, *Task.options])
        takes = f"it takes {every}" if own else f"{self.name} takes none of its own, only {every}"
        return f"model.task_options.{key}: the {self.name} task takes no option {key} (given {value!r}); {takes}"

    def metric_defaults(self) -> dict[str, Any]:
        """Arguments an extra metric is given where its constructor takes them and they are not given."""
        return {}

    def extra_metric_specs(self, given: Any, resolve: MetricResolver | None) -> dict[str, tuple[type, dict[str, Any]]]:
        """The ``metrics`` option checked: each name new, each class allowed (``resolve``), each built once."""
        if not isinstance(given, dict):
            raise UserInputError(f"model.task_options.metrics must be {METRICS.allowed}, got {given!r}")
        taken = {"loss", *self.own_metrics()}
        specs = {}
        for key, spec in given.items():
            where = f"model.task_options.metrics.{key}"
            if "." in key:  # --model.task_options.metrics.a.b=... on the command line
                raise UserInputError(f"{where}: give model.task_options.metrics as a whole mapping, not by dotted keys")
            if not METRIC_NAME.fullmatch(key) or key in taken:
                raise UserInputError(
                    f"{where}: choose another name (letters, digits and _, starting with a letter; not one of the "
                    f"{self.name} task's own metrics {', '.join(sorted(taken))})"
                )
            init_args = (spec.get("init_args") or {}) if isinstance(spec, dict) else None
            if not isinstance(init_args, dict) or not isinstance(spec.get("class_path"), str):
                allowed = "{class_path: a torchmetrics Metric class, init_args: {...}}"
                raise UserInputError(f"{where} must be {allowed}, got {spec!r}")
            if resolve is None:
                raise ValueError("extra metrics need a resolver of class paths (make_task(..., resolve=))")
            specs[key] = self.metric_spec(where, spec["class_path"], init_args, resolve)
        return specs

    def metric_spec(
        self, where: str, class_path: str, init_args: dict[str, Any], resolve: MetricResolver
    ) -> tuple[type, dict[str, Any]]:
        try:
            metric_class = resolve(class_path)
        except UserInputError:
            raise UserInputError(
                f"{where}.class_path {class_path!r} is not allowed: name a torchmetrics Metric class (such as "
                f"torchmetrics.classification.MulticlassAccuracy); {HOW_TO_TRUST}"
            ) from None
        arguments = dict(init_args)
        accepted = inspect.signature(metric_class).parameters
        for key, value in self.metric_defaults().items():
            if key in accepted and arguments.get(key) is None:
                arguments[key] = value
        top_k = arguments.get("top_k")
        if isinstance(top_k, int) and top_k < 1:  # torchmetrics builds it, then fails at its first update
            raise UserInputError(
                f"{where}.init_args.top_k counts the best scores a hit may be among: 1 or more, got {top_k}"
            )
        try:
            metric = metric_class(**arguments)
        except (TypeError, ValueError) as error:
            raise UserInputError(f"{where}: {class_path} does not take {arguments}: {first_line(error)}") from None
        self.try_metric(metric, f"{where}: {class_path} with {arguments}")
        return metric_class, arguments

    def try_metric(self, metric: Metric, named: str) -> None:
        """Update and compute ``metric`` once on :meth:`example_batch`, so that one that would fail on the first
        batch of a run (arguments its constructor accepts but its update refuses) stops it before it starts."""
        scores, targets = self.example_batch()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what it says of a stand-in batch's values is not about the data
                metric.update(scores, targets)
                metric.compute()
        except Exception as error:  # whatever it raises here, it would raise mid-run
            raise UserInputError(
                f"{named} fails on a batch of this {self.name} task (scores {tuple(scores.shape)}, targets "
                f"{tuple(targets.shape)}): {first_line(error)}"
            ) from None

    def example_batch(self) -> tuple[Tensor, Tensor]:
        """A stand-in batch as the metrics take it, ``(scores, targets)``: the scores of varied outputs (drawn from no
        random generator) and :meth:`example_targets`."""
        targets = self.example_targets()
        outputs = torch.arange(len(targets) * self.num_outputs, dtype=torch.float32).sin()
        return self.scores(outputs.view(len(targets), self.num_outputs)), self.metric_targets(targets)

    def example_targets(self) -> Tensor:
        """Targets of a few examples as the data gives them to this task, with every class (or label, present and
        absent) among them."""
        raise NotImplementedError

    def on_device_of(self, values: Tensor | None, like: Tensor) -> Tensor | None:
        """``values`` (an option's tensor) on ``like``'s device with its dtype, copied there once."""
        if values is None:
            return None
        key = (id(values), like.device, like.dtype)
        if key not in self.placed:
            self.placed[key] = values.to(device=like.device, dtype=like.dtype)
        return self.placed[key]

    @classmethod
    def outputs_for(cls, num_classes: int) -> int:
        """How many outputs the network needs for data with ``num_classes`` classes (or labels)."""
        raise NotImplementedError

    @classmethod
    def outputs_rule(cls) -> str:
        """:meth:`outputs_for` in words, for error messages."""
        raise NotImplementedError

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The training loss of a batch: the mean of the examples' losses."""
        return self.example_losses(outputs, targets).mean()

    def example_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The loss of each example, shape (batch,): which images the network gets most wrong."""
        raise NotImplementedError

    def scores(self, outputs: Tensor) -> Tensor:
        """What the metrics compare with the targets (logits, probabilities or values)."""
        raise NotImplementedError

    def decisions(self, outputs: Tensor) -> Tensor:
        """What the network predicts: a class index, 0/1, a 0/1 vector of labels, or a value."""
        raise NotImplementedError

    def metric_targets(self, targets: Tensor) -> Tensor:
        """The targets as the metrics take them; a task whose training targets can be soft (mixed) makes them hard."""
        return targets

    def metrics(self) -> MetricCollection:
        """The task's metrics and the extra ones, unprefixed (``acc``, ``f1``, ...), updated with
        ``(scores, targets)``."""
        return MetricCollection({**self.own_metrics(), **self.extra_metrics()})

    def own_metrics(self) -> dict[str, Metric]:
        """The task's own metrics, new, by name."""
        raise NotImplementedError

    def extra_metrics(self) -> dict[str, Metric]:
        """The extra metrics of the ``metrics`` option, new, by name."""
        return {key: metric_class(**arguments) for key, (metric_class, arguments) in self.extra.items()}

    def extra_report(self, scores: Tensor, targets: Tensor) -> dict[str, float]:
        """Each extra metric over a whole split (for the report's ``overall``)."""
        values = {}
        for key, metric in self.extra_metrics().items():
            metric.update(scores, targets)
            values[key] = metric.compute().item()
        return values

    def confusion_matrix(self) -> Metric | None:
        """A confusion-matrix metric updated with ``(decisions, targets)``, or ``None`` where there is none."""
        return None

    def describe(self, value: Tensor, class_names: list[str]) -> str:
        """A target or a decision as text, for image titles."""
        raise NotImplementedError

    def report(self, scores: Tensor, targets: Tensor, class_names: list[str]) -> dict[str, Any]:
        """Every metric of a whole split as plain values: ``overall``, and where it applies ``per_class`` rows and
        a ``confusion_matrix``."""
        raise NotImplementedError

    def prediction_rows(self, outputs: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
        """What a prediction file says of each image: the decision in words and, where there are any, the
        probabilities (columns ``p_<class>``)."""
        raise NotImplementedError

    def decisions_with_probabilities(
        self, outputs: Tensor, class_names: list[str], names: list[str], probabilities: Tensor
    ) -> list[dict[str, Any]]:
        """Rows of :meth:`prediction_rows`: each decision as :meth:`describe` says it, and ``p_<name>`` columns."""
        words = [self.describe(decision, class_names) for decision in self.decisions(outputs)]
        return [
            {"predicted": word, **{f"p_{name}": p for name, p in zip(names, row, strict=True)}}
            for word, row in zip(words, probabilities.float().tolist(), strict=True)
        ]


class OneOutputTask(Task):
    """A task whose network has exactly one output (a logit or a value), whatever the number of classes."""

    @classmethod
    def outputs_for(cls, num_classes: int) -> int:
        return 1

    @classmethod
    def outputs_rule(cls) -> str:
        return "exactly 1 output"


def per_class_rows(names: list[str], columns: dict[str, Tensor], support: Tensor) -> list[dict[str, Any]]:
    """One row per class or label: its name, each column's value, and its support (how many examples have it)."""
    return [
        {"class": name, **{key: float(values[i]) for key, values in columns.items()}, "support": int(support[i])}
        for i, name in enumerate(names)
    ]


def number_option(name: str, value: Any, allowed: str, fits: Callable[[float], bool]) -> float:
    """An option's number, refused unless it is a finite int or float that ``fits``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not fits(value):
        raise UserInputError(f"model.task_options.{name} must be {allowed}, got {value!r}")
    return float(value)


def positive_floats(name: str, value: Any, count: int, each: str) -> list[float]:
    """An option's list of ``count`` positive numbers (one per ``each``), refused otherwise."""

    def positive(item: Any) -> bool:
        return not isinstance(item, bool) and isinstance(item, int | float) and math.isfinite(item) and item > 0

    if not isinstance(value, list) or len(value) != count or not all(positive(item) for item in value):
        allowed = f"a list of {count} positive floats (one per {each})"
        raise UserInputError(f"model.task_options.{name} must be {allowed}, got {value!r}")
    return [float(item) for item in value]


THRESHOLD = TaskOption(
    0.5,
    "a float in (0, 1)",
    "the probability above which a label is decided present: decisions, prediction rows, thresholded metrics",
)


def threshold_option(value: Any) -> float:
    """The ``threshold`` option, checked."""
    return number_option("threshold", value, THRESHOLD.allowed, lambda v: 0 < v < 1)


def logit(probability: float) -> float:
    """The logit at which the sigmoid is ``probability`` (0.0 exactly for 0.5)."""
    return math.log(probability / (1 - probability))
