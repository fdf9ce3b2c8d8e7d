"""The interface every task implements (see :mod:`project.tasks`)."""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from project.errors import UserInputError
from project.plain import PlainData, plain
from project.tasks.extra_metrics import MetricResolver, MetricSpec, metric_specs, try_metric


class Task:
    """One kind of prediction: what the network's raw outputs (shape (batch, ``num_outputs``)) mean.

    A task is built from its options (``--model.task Multiclass --model.task.label_smoothing 0.1``; each subclass's
    constructor takes its own and checks them), then bound to its network's number of outputs (:meth:`bind`). It keeps
    each constructor argument as an attribute of the same name: :attr:`options` reads them back as plain values, which
    a checkpoint records and a task rebuilt from it takes again.

    :attr:`name` says which targets it takes (``multiclass``: class indices; ``binary``: 0/1; ``multilabel``: 0/1
    vectors; ``regression``: values): the data's targets call for a task of that name, and a task of your own
    (``class FocalLoss(Multiclass)``) inherits it.

    Args:
        metrics: extra metrics by name, ``{acc_top3: {class_path: torchmetrics.classification.MulticlassAccuracy,
            init_args: {top_k: 3}}}``: a torchmetrics ``Metric`` class already imported, ``num_classes`` or
            ``num_labels`` (and a threshold) filled in; logged as ``train/``, ``val/``, ``test/<name>`` and in reports.
    """

    name: ClassVar[str] = ""
    monitor: ClassVar[tuple[str, Literal["min", "max"]]]
    """The validation metric that picks the best checkpoint, and whether higher or lower is better."""
    summary: ClassVar[tuple[str, ...]]
    """The metrics the HParams tab shows as columns, besides the loss."""
    outputs_meaning: ClassVar[str] = "the network's outputs"
    """What the network's outputs are, in words (an export's ``config.json`` says it)."""

    def __init__(self, metrics: dict[str, PlainData] | None = None) -> None:
        self.metrics = dict(metrics or {})
        self.num_outputs = 0
        """The network's outputs: set by :meth:`bind`."""
        self.extra: dict[str, MetricSpec] = {}
        """The extra metrics, checked: their classes and the arguments they are built with."""
        self.placed: dict[tuple[Any, ...], Tensor] = {}

    @property
    def options(self) -> dict[str, Any]:
        """The arguments of the task's constructors (its class's and its bases'), as plain values."""
        names = [
            name
            for cls in type(self).__mro__
            if issubclass(cls, Task) and "__init__" in vars(cls)
            for name in _argument_names(cls.__init__)
        ]
        missing = [name for name in names if name not in vars(self)]
        if missing:
            raise TypeError(f"{type(self).__name__}.__init__ keeps no attribute {missing[0]} (its argument)")
        return {name: plain(vars(self)[name]) for name in dict.fromkeys(names)}

    def bind(self, num_outputs: int, resolve: MetricResolver) -> Task:
        """Take a network of ``num_outputs`` outputs; check what depends on them (``resolve`` turns the class paths
        of extra metrics into classes); return the task."""
        if num_outputs < 1 or num_outputs != self.outputs_for(num_outputs):
            raise UserInputError(f"a {self.name} task needs a network with {self.outputs_rule()}, got {num_outputs}")
        self.num_outputs = num_outputs
        self.check_outputs()
        taken = {"loss", *self.own_metrics()}
        trial = lambda metric, named: try_metric(metric, named, self.example_batch(), self.name)  # noqa: E731
        self.extra = metric_specs(self.metrics, taken, self.metric_defaults(), resolve, trial)
        return self

    def check_outputs(self) -> None:
        """Check the options that depend on :attr:`num_outputs` (one class weight per class, ...)."""

    def metric_defaults(self) -> dict[str, Any]:
        """Arguments an extra metric is given where its constructor takes them and they are not given."""
        return {}

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

    def metric_collection(self) -> MetricCollection:
        """The task's metrics and the extra ones, new and unprefixed (``acc``, ``f1``, ...), updated with
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
        probabilities (columns ``p_<class>``), computed in float64 from the outputs, so that the CSV's six digits are
        the same as those of the torch-free path (:mod:`project.inference.numpy_predictor`)."""
        raise NotImplementedError

    def decisions_with_probabilities(
        self, outputs: Tensor, class_names: list[str], names: list[str], probabilities: Tensor
    ) -> list[dict[str, Any]]:
        """Rows of :meth:`prediction_rows`: each decision as :meth:`describe` says it, and ``p_<name>`` columns."""
        words = [self.describe(decision, class_names) for decision in self.decisions(outputs)]
        return [
            {"predicted": word, **{f"p_{name}": p for name, p in zip(names, row, strict=True)}}
            for word, row in zip(words, probabilities.double().tolist(), strict=True)
        ]


class OneOutputTask(Task):
    """A task whose network has exactly one output (a logit or a value), whatever the number of classes."""

    @classmethod
    def outputs_for(cls, num_classes: int) -> int:
        return 1

    @classmethod
    def outputs_rule(cls) -> str:
        return "exactly 1 output"


def _argument_names(function: Any) -> list[str]:
    """The named arguments of ``function`` (not ``self``, ``*args``, ``**kwargs``)."""
    parameters = inspect.signature(function).parameters.values()
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [parameter.name for parameter in parameters if parameter.name != "self" and parameter.kind not in variadic]


def per_class_rows(names: list[str], columns: dict[str, Tensor], support: Tensor) -> list[dict[str, Any]]:
    """One row per class or label: its name, each column's value, and its support (how many examples have it)."""
    return [
        {"class": name, **{key: float(values[i]) for key, values in columns.items()}, "support": int(support[i])}
        for i, name in enumerate(names)
    ]


def checked_number(name: str, value: float, allowed: str, fits: bool) -> float:
    """An option's number, refused unless it is finite and ``fits``."""
    if not math.isfinite(value) or not fits:
        raise UserInputError(f"model.task.{name} must be {allowed}, got {value!r}")
    return float(value)


def positive_list(name: str, value: list[float], count: int, each: str) -> Tensor:
    """An option's list of ``count`` positive finite numbers (one per ``each``), as a tensor; refused otherwise."""
    if len(value) != count or not all(math.isfinite(item) and item > 0 for item in value):
        allowed = f"a list of {count} positive floats (one per {each})"
        raise UserInputError(f"model.task.{name} must be {allowed}, got {value!r}")
    return torch.tensor([float(item) for item in value])


def checked_threshold(threshold: float) -> float:
    """The ``threshold`` option, checked: the probability above which a label is decided present."""
    return checked_number("threshold", threshold, "a float in (0, 1)", 0 < threshold < 1)


def logit(probability: float) -> float:
    """The logit at which the sigmoid is ``probability`` (0.0 exactly for 0.5)."""
    return math.log(probability / (1 - probability))
