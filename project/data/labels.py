"""Label rules: binary and multilabel targets made from class labels (data.positive_classes, data.label_sets), and
the renumbered labels of a subset of the classes (data.only_classes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from project.data.batches import ExampleBatch
from project.errors import UserInputError


class RelabelledTargets(Dataset):
    """A dataset whose class targets pass through a label rule (see :class:`LabelRule`)."""

    def __init__(self, dataset: Dataset, rule: LabelRule | ClassSubset) -> None:
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


class LabelRule:
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


class ClassSubset:
    """The labels of some of the classes, numbered 0..k-1 in the order given (``data.only_classes``)."""

    def __init__(self, classes: Sequence[int]) -> None:
        self.classes = [int(c) for c in classes]
        self.index = {c: i for i, c in enumerate(self.classes)}

    def __call__(self, label: int) -> int:
        return self.index[int(label)]

    def apply(self, labels: Tensor) -> Tensor:
        table = torch.full((max(self.classes) + 1,), -1, dtype=torch.long)
        table[self.classes] = torch.arange(len(self.classes))
        return table[labels]


def check_label_options(
    module: str,
    task: str,
    positive_classes: list[int] | None,
    label_sets: dict[str, list[int]] | None,
    only_classes: list[int] | None,
) -> None:
    """Refuse label rules that exclude each other, or that a data module without classes (its ``task`` is not
    multiclass) cannot apply; the rules' classes are checked once the classes are known (:func:`check_label_rules`)."""
    if sum(bool(option) for option in (positive_classes, label_sets, only_classes)) > 1:
        raise UserInputError(
            "data.positive_classes (binary), data.label_sets (multilabel) and data.only_classes (some classes) "
            "exclude each other: give one"
        )
    if (positive_classes or label_sets or only_classes) and task != "multiclass":
        raise UserInputError(
            f"data.positive_classes, label_sets and only_classes work on classes; {module} has no classes (its task "
            f"is {task})"
        )


def check_label_rules(
    num_classes: int,
    positive_classes: list[int] | None,
    label_sets: dict[str, list[int]] | None,
    only_classes: list[int] | None,
) -> None:
    """Refuse label options that name classes the data does not have, or that would leave a label empty."""
    kept = only_classes
    if kept and (len(set(kept)) != len(kept) or len(kept) < 2 or not set(kept) <= set(range(num_classes))):
        raise UserInputError(f"data.only_classes {kept} must name 2 or more different classes of 0..{num_classes - 1}")
    rules = {"positive": positive_classes} if positive_classes else dict(label_sets or {})
    for name, classes in rules.items():
        option = "data.positive_classes" if positive_classes else f"data.label_sets.{name}"
        outside = [c for c in classes if not 0 <= c < num_classes]
        if outside:
            raise UserInputError(f"{option} {outside} are not classes of this data: use values in 0..{num_classes - 1}")
        if not classes or len(set(classes)) == num_classes:
            raise UserInputError(f"{option} names no class or every class: one of its two answers would be empty")
