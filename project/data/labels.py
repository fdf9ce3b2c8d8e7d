"""Label rules: the classes' names, binary and multilabel targets made from class labels (``data.labels``:
:class:`Labels`), and the renumbered labels of a subset of the classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from project.data.batches import ExampleBatch
from project.errors import UserInputError


class RelabelledTargets(Dataset):
    """A dataset whose class targets pass through a label rule (see :class:`_LabelRule`)."""

    def __init__(self, dataset: Dataset, rule: _LabelRule | _ClassSubset) -> None:
        self.dataset = dataset
        self.rule = rule

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.dataset[index]
        return image, self.rule(target)

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        """Many examples at once, as a DataLoader asks for them: an :class:`~project.data.batches.ExampleBatch`,
        relabelled whole, where the dataset under it reads one (torch's ``__getitems__`` protocol, as its ``Subset``
        follows it), else a list of examples."""
        if not callable(getattr(self.dataset, "__getitems__", None)):
            return [self[index] for index in indices]
        read = self.dataset.__getitems__(indices)
        examples = [(image, self.rule(target)) for image, target in read]
        if isinstance(read, ExampleBatch):
            return ExampleBatch(examples, read.images, self.rule.apply(read.targets))
        return examples


class _LabelRule:
    """Targets from class labels: for each named label, 1 if the class is one of its classes, else 0.

    One label (``positive_classes``) makes a binary target, an int; several (``label_sets``) a multilabel target, a
    0/1 vector. Picklable, for DataLoader workers.
    """

    def __init__(self, label_sets: dict[str, Sequence[int]], binary: bool) -> None:
        self.label_sets = {name: frozenset(classes) for name, classes in label_sets.items()}
        self.binary = binary

    def __call__(self, label: int) -> int | Tensor:
        flags = [int(int(label) in classes) for classes in self.label_sets.values()]
        return flags[0] if self.binary else torch.tensor(flags)

    def apply(self, labels: Tensor) -> Tensor:
        """The rule on a whole tensor of class labels at once."""
        flags = [torch.isin(labels, torch.tensor(sorted(classes))).long() for classes in self.label_sets.values()]
        return flags[0] if self.binary else torch.stack(flags, dim=1)


class _ClassSubset:
    """The labels of some of the classes, numbered 0..k-1 in the order given (``data.labels.only_classes``)."""

    def __init__(self, classes: Sequence[int]) -> None:
        self.classes = [int(c) for c in classes]
        self.index = {c: i for i, c in enumerate(self.classes)}

    def __call__(self, label: int) -> int:
        return self.index[int(label)]

    def apply(self, labels: Tensor) -> Tensor:
        table = torch.full((max(self.classes) + 1,), -1, dtype=torch.long)
        table[self.classes] = torch.arange(len(self.classes))
        return table[labels]


def check_class_count(num_classes: int) -> None:
    """Refuse a ``data.num_classes`` below 2: a classification needs two classes or more."""
    if num_classes < 2:
        raise UserInputError(f"data.num_classes must be 2 or more, got {num_classes}")


@dataclass(frozen=True)
class Labels:
    """How a data module's class labels are named and turned into targets: ``--data.labels.positive_classes
    [5,6,7,8,9]`` (a piece of every data module's arguments, checked when it is built; the classes they name are
    checked once the data's classes are known, :meth:`check_classes`). They work on classes: data whose task is not
    multiclass (regression, several labels per image) refuses them.

    Args:
        class_names: a name per class of the data, in label order (reports, predictions); default: the data's own
            (a folder's class folders, torchvision's names), else ``0``, ``1``, ...
        positive_classes: a binary task: target 1 for these classes, 0 for the rest (``[5, 6, 7, 8, 9]``: "digit
            >= 5").
        label_sets: a multilabel task: one yes/no label per entry, 1 when the class is in its list
            (``{even: [0, 2, 4, 6, 8], at_least_5: [5, 6, 7, 8, 9]}``).
        only_classes: keep only these classes, numbered 0..k-1 in this order (``[5, 6, 7, 8, 9]``: digits 5-9).
    """

    class_names: list[str] | None = None
    positive_classes: list[int] | None = None
    label_sets: dict[str, list[int]] | None = None
    only_classes: list[int] | None = None

    def __post_init__(self) -> None:
        if sum(bool(rule) for rule in (self.positive_classes, self.label_sets, self.only_classes)) > 1:
            raise UserInputError(
                "data.labels.positive_classes (binary), label_sets (multilabel) and only_classes (some classes) "
                "exclude each other: give one"
            )

    @property
    def given(self) -> bool:
        return any((self.class_names, self.positive_classes, self.label_sets, self.only_classes))

    def task(self, default: str) -> str:
        """The task the targets call for, on data whose own is ``default``."""
        if self.positive_classes:
            return "binary"
        return "multilabel" if self.label_sets else default

    def check_task(self, module: str, default: str) -> None:
        """Refuse these options on data that has no classes (its ``default`` task is not multiclass)."""
        if self.given and default != "multiclass":
            raise UserInputError(
                f"data.labels.class_names, positive_classes, label_sets and only_classes work on classes; {module} has "
                f"no classes (its task is {default})"
            )

    def names(self, own: list[str] | None, num_classes: int) -> list[str]:
        """Names of the classes (or labels) the task is about, of data with ``num_classes`` classes named ``own``."""
        if self.positive_classes:
            return ["other", "positive"]
        if self.label_sets:
            return list(self.label_sets)
        names = self.class_names or own or [str(index) for index in range(num_classes)]
        return [str(names[index]) for index in self.only_classes] if self.only_classes else [str(n) for n in names]

    def count(self, num_classes: int) -> int:
        """How many classes (or labels) the task is about."""
        return len(self.label_sets or self.only_classes or range(num_classes))

    def rule(self) -> _LabelRule | _ClassSubset | None:
        """What turns a class label into a target, or ``None``: the label is the target."""
        if self.only_classes:
            return _ClassSubset(self.only_classes)
        if self.positive_classes:
            return _LabelRule({"positive": self.positive_classes}, binary=True)
        return _LabelRule(self.label_sets, binary=False) if self.label_sets else None

    def check_classes(self, num_classes: int) -> None:
        """Refuse options that name classes the data does not have, or that would leave a label empty."""
        if self.class_names is not None and len(self.class_names) != num_classes:
            raise UserInputError(
                f"data.labels.class_names names {len(self.class_names)} classes, and the data has {num_classes}"
            )
        kept = self.only_classes
        if kept and (len(set(kept)) != len(kept) or len(kept) < 2 or not set(kept) <= set(range(num_classes))):
            raise UserInputError(
                f"data.labels.only_classes {kept} must name 2 or more different classes of 0..{num_classes - 1}"
            )
        rules = {"positive": self.positive_classes} if self.positive_classes else dict(self.label_sets or {})
        for name, classes in rules.items():
            option = "data.labels.positive_classes" if self.positive_classes else f"data.labels.label_sets.{name}"
            outside = [c for c in classes if not 0 <= c < num_classes]
            if outside:
                raise UserInputError(
                    f"{option} {outside} are not classes of this data: use values in 0..{num_classes - 1}"
                )
            if not classes or len(set(classes)) == num_classes:
                raise UserInputError(f"{option} names no class or every class: one of its two answers would be empty")
