"""Extra metrics of a task (``--model.task.metrics``): named torchmetrics classes, each checked once when the task is
bound to its network, so that one that would fail mid-run stops the run before it starts."""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor
from torchmetrics import Metric

from project.errors import UserInputError, first_line
from project.trusted import HOW_TO_TRUST

MetricResolver = Callable[[str], type]
"""Turns an extra metric's class path into the class, refusing what is not allowed (the training module's
allow-list: a :class:`torchmetrics.Metric` subclass already imported); the tasks import no training code."""
MetricSpec = tuple[type, dict[str, Any]]
"""A metric's class and the arguments it is built with."""
_ALLOWED = "a mapping {name: {class_path: a torchmetrics Metric class, init_args: {...}}}"
_METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def metric_specs(
    given: Any,
    taken: set[str],
    defaults: dict[str, Any],
    resolve: MetricResolver,
    trial: Callable[[Metric, str], None],
) -> dict[str, MetricSpec]:
    """The ``metrics`` option checked: each name new (not in ``taken``), each class allowed (``resolve``), its
    arguments completed by ``defaults`` where it takes them, each built once and tried (``trial``)."""
    if not isinstance(given, dict):
        raise UserInputError(f"model.task.metrics must be {_ALLOWED}, got {given!r}")
    specs = {}
    for key, spec in given.items():
        where = f"model.task.metrics.{key}"
        if not _METRIC_NAME.fullmatch(key) or key in taken:
            raise UserInputError(
                f"{where}: choose another name (letters, digits and _, starting with a letter; not one of the task's "
                f"own metrics {', '.join(sorted(taken))})"
            )
        init_args = (spec.get("init_args") or {}) if isinstance(spec, dict) else None
        if not isinstance(init_args, dict) or not isinstance(spec.get("class_path"), str):
            raise UserInputError(f"{where} must be {{class_path: a torchmetrics Metric class, init_args: {{...}}}}")
        specs[key] = _metric_spec(where, spec["class_path"], init_args, defaults, resolve, trial)
    return specs


def _metric_spec(
    where: str,
    class_path: str,
    init_args: dict[str, Any],
    defaults: dict[str, Any],
    resolve: MetricResolver,
    trial: Callable[[Metric, str], None],
) -> MetricSpec:
    try:
        metric_class = resolve(class_path)
    except UserInputError:
        raise UserInputError(
            f"{where}.class_path {class_path!r} is not allowed: name a torchmetrics Metric class (such as "
            f"torchmetrics.classification.MulticlassAccuracy); {HOW_TO_TRUST}"
        ) from None
    arguments = dict(init_args)
    accepted = inspect.signature(metric_class).parameters
    for key, value in defaults.items():
        if key in accepted and arguments.get(key) is None:
            arguments[key] = value
    top_k = arguments.get("top_k")
    if isinstance(top_k, int) and top_k < 1:  # torchmetrics builds it, then fails at its first update
        raise UserInputError(f"{where}.init_args.top_k counts the top scores a hit is among: 1 or more, got {top_k}")
    try:
        metric = metric_class(**arguments)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{where}: {class_path} does not take {arguments}: {first_line(error)}") from None
    trial(metric, f"{where}: {class_path} with {arguments}")
    return metric_class, arguments


def try_metric(metric: Metric, named: str, batch: tuple[Tensor, Tensor], task: str) -> None:
    """Update and compute ``metric`` once on ``batch`` (scores, targets of a stand-in batch of ``task``), so that one
    that would fail on the first batch of a run (arguments its constructor accepts but its update refuses) stops it
    before it starts."""
    scores, targets = batch
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what it says of a stand-in batch's values is not about the data
            metric.update(scores, targets)
            metric.compute()
    except Exception as error:  # whatever it raises here, it would raise mid-run
        raise UserInputError(
            f"{named} fails on a batch of this {task} task (scores {tuple(scores.shape)}, targets "
            f"{tuple(targets.shape)}): {first_line(error)}"
        ) from None
