"""Objects as plain values and back: how a checkpoint records the network and optimizer a run was built with, and
how they are rebuilt from it, only ever as classes on an allow-list
(:func:`~project.training.checkpoints.allowed_class`)."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path, PurePath
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import Metric

from project.errors import UserInputError
from project.networks import Network
from project.networks.library import hub_offline
from project.tasks import Task
from project.training.checkpoints import allowed_class, import_path

PROJECT_VERSION = "0.2"
"""What a checkpoint records as ``project_version``: the layout of options its hyperparameters follow."""
_RELEASES = {"0.1": "git checkout 435af47"}
"""Where the releases that read older checkpoints are: the last commit of each."""
_LIGHTNING_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
"""What LightningCLI records as a model's ``_instantiator`` (never used here: the project builds the model itself)."""


def plain_spec(value: Any) -> dict[str, Any]:
    """An object built in Python as plain values: its class path and arguments (a network's ``config``, a partial's
    keywords), the form the command line saves."""
    if isinstance(value, functools.partial):
        return {"class_path": import_path(value.func), "init_args": dict(value.keywords)}
    if isinstance(value, type):
        return {"class_path": import_path(value), "init_args": {}}
    if isinstance(value, Network):
        return {"class_path": import_path(type(value)), "init_args": dict(value.config)}
    if isinstance(value, Task):
        return {"class_path": import_path(type(value)), "init_args": value.options}
    raise UserInputError(
        f"a {type(value).__name__} cannot be recorded in a checkpoint: give a Network (its config holds its "
        "arguments), a Task, a class, or functools.partial(class, **arguments)"
    )


def from_spec(spec: Any, base: type, what: str, source: str | Path, build: bool = True) -> Any:
    """Rebuild a ``{"class_path", "init_args"}`` spec from a checkpoint: the class from the allow-list of ``base``'s
    subclasses; built (``build``: with the Hugging Face Hub offline, :func:`~project.networks.library.hub_offline`)
    or as a factory of its arguments."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise UserInputError(f"{source} does not record its {what} (hyper_parameters.{what})")
    cls = allowed_class(spec["class_path"], base, what)
    arguments = dict(spec.get("init_args") or {})
    if not build:
        return functools.partial(cls, **arguments)
    with hub_offline():  # a network from a checkpoint reaches no server (its weights are in the checkpoint)
        return cls(**arguments)


def metric_class(class_path: str) -> type[Metric]:
    """An extra metric's class (``--model.task.metrics``) from the allow-list: a torchmetrics ``Metric``
    subclass already imported (the tasks import no training code, so they are handed this)."""
    return allowed_class(class_path, Metric, "metric")


def check_recorded(checkpoint: dict[str, Any], source: str | Path) -> None:
    """Refuse, in one line naming ``source``, a checkpoint whose recorded options no command line would give: the
    classes it names outside their allow-lists, an optimizer or scheduler that is not a ``{class_path, init_args}``
    mapping, a task or task options its task refuses, an instantiator that is not LightningCLI's. Every command that
    reads a checkpoint checks it so, whether it rebuilds the model from it (evaluate, export, predict) or not (fit,
    validate and test with ``--ckpt_path``)."""
    version = checkpoint.get("project_version")
    if version != PROJECT_VERSION:
        writer = f"project {version}" if version else "project 0.1 (before the pieces of 0.2)"
        written = version or "0.1"
        release = _RELEASES.get(written)
        where = f"{written}: {release}" if release else f"{written}, which this one ({PROJECT_VERSION}) predates"
        raise UserInputError(
            f"{source} was written by {writer}, whose options this one does not read: use the release that wrote it "
            f"({where}), or train again"
        )
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        if _nested_deeper(checkpoint.get(key), _MAX_NESTING):
            raise UserInputError(f"{source}: its {key} nest deeper than {_MAX_NESTING} levels (a config never does)")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise UserInputError(f"{source} records no hyper_parameters mapping (it holds {type(hparams).__name__})")
    if hparams.get("_instantiator") not in (None, _LIGHTNING_INSTANTIATOR):
        instantiator = hparams["_instantiator"]
        raise UserInputError(f"{source} names the instantiator {instantiator!r}; only LightningCLI's is read")
    network = hparams.get("network")  # None: one built in Python that Lightning could not record (given on load)
    if network is not None and not (isinstance(network, dict) and isinstance(network.get("init_args") or {}, dict)):
        raise UserInputError(f"{source} does not record its network as {{class_path, init_args}} (got {network!r})")
    if network is not None:
        allowed_class(network.get("class_path"), Network, "network")
    for name, base in (("optimizer", torch.optim.Optimizer), ("lr_scheduler", LRScheduler)):
        spec = hparams.get(name)
        if spec is not None and not (isinstance(spec, dict) and isinstance(spec.get("init_args") or {}, dict)):
            raise UserInputError(f"{source} records model.{name} as {spec!r}, not a {{class_path, init_args}} mapping")
        if spec is not None:
            allowed_class(spec.get("class_path"), base, name)
    check_recorded_paths(checkpoint, source)
    outputs = ((network or {}).get("init_args") or {}).get("num_outputs")
    task = from_spec(hparams.get("task"), Task, "task", source)
    if isinstance(outputs, int):
        try:
            task.bind(outputs, metric_class)
        except UserInputError as error:
            raise UserInputError(f"{source}: {error}") from None


_MAX_NESTING = 64
"""The deepest a checkpoint's recorded options may nest (a config's are a few levels): deeper, the code that reads
them recursively would exhaust Python's stack."""


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether mappings and lists in ``value`` nest more than ``limit`` levels deep (walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list | tuple) else ()
        stack.extend((child, depth + 1) for child in children)
    return False


_FILE_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")
"""The files a ModelCheckpoint's state names (besides the keys of ``best_k_models``)."""


def check_recorded_paths(checkpoint: dict[str, Any], source: str | Path) -> None:
    """Refuse a checkpoint whose checkpoint callbacks' states (``ModelCheckpoint``, ``BestCheckpoint``) name a file
    that leads out of the folder it records (``dirpath``): a ``..`` or a link inside it, a ``..`` after a folder's
    name elsewhere, a remote file, or files and no folder. A file elsewhere without ``..`` (an older run's best) is
    accepted: Lightning never deletes it. Why: a resumed ``ModelCheckpoint`` deletes the old best files its state
    names (docs/design_notes.md)."""
    callbacks = checkpoint.get("callbacks") or {}
    if not isinstance(callbacks, dict):
        raise UserInputError(f"{source} records its callbacks' states as {type(callbacks).__name__}, not a mapping")
    for name, state in callbacks.items():
        if not isinstance(state, dict):
            continue
        best_k = state.get("best_k_models") or {}
        files = [state.get(key) for key in _FILE_KEYS] + list(best_k if isinstance(best_k, dict) else [best_k])
        files = [file for file in files if file not in (None, "")]
        dirpath = state.get("dirpath") if files else ""
        if not isinstance(dirpath, str) or not all(isinstance(file, str) for file in files):
            raise UserInputError(f"{source}: the state of {name} records files {files!r}, not paths in its dirpath")
        outside = next((file for file in files if _leads_out(file, dirpath)), None)
        if outside is not None:
            raise UserInputError(
                f"{source}: the state of {name} names {outside}, which leads out of its checkpoint folder {dirpath} "
                "(Lightning would delete it as an old best checkpoint); not a checkpoint a run wrote"
            )


def _leads_out(file: str, folder: str) -> bool:
    """Whether ``file``, which a checkpoint callback's state names beside its ``folder``, leads out of that folder
    where it lies inside it by its name (a ``..``, a link), or holds a ``..`` after a folder's name elsewhere, or is
    remote (Lightning deletes those without looking where they are)."""
    parts, base = PurePath(file).parts, PurePath(folder).parts
    if parts[: len(base)] == base:
        try:
            return ".." in parts[len(base) :] or not Path(file).parent.resolve().is_relative_to(Path(folder).resolve())
        except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte: no file a run writes
            return True
    named = list(itertools.dropwhile(lambda part: part in ("..", PurePath(file).anchor), parts))
    return ".." in named or "://" in file  # a remote file (s3://...) is deleted wherever it is
