"""The interface every task implements (see :mod:`project.tasks`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor
from torchmetrics import Metric, MetricCollection

from project.errors import UserInputError


class Task:
    """One kind of prediction. Outputs are the network's raw outputs, shape (batch, ``num_outputs``).

    A subclass sets :attr:`name`, :attr:`monitor` and :attr:`summary`, and implements the methods below; defining it
    in a module of :mod:`project.tasks` registers it.
    """

    name: ClassVar[str] = ""
    monitor: ClassVar[tuple[str, Literal["min", "max"]]]
    """The validation metric that picks the best checkpoint, and whether higher or lower is better."""
    summary: ClassVar[tuple[str, ...]]
    """The metrics the HParams tab shows as columns, besides the loss."""
    registry: ClassVar[dict[str, type[Task]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Task.registry[cls.name] = cls

    def __init__(self, num_outputs: int) -> None:
        expected = self.outputs_for(num_outputs)
        if num_outputs != expected or num_outputs < 1:
            raise UserInputError(f"a {self.name} task needs a network with {self.outputs_rule()}, got {num_outputs}")
        self.num_outputs = num_outputs

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

    def metrics(self) -> MetricCollection:
        """The task's metrics, unprefixed (``acc``, ``f1``, ...), updated with ``(scores, targets)``."""
        raise NotImplementedError

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
