"""Objects as plain values and back: how a checkpoint records the network and optimizer a run was built with, and
how they are rebuilt from it, only ever as classes on an allow-list
(:func:`~project.training.checkpoints.allowed_class`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from project.errors import UserInputError
from project.networks import Network
from project.training.checkpoints import allowed_class, import_path


def plain_spec(value: Any) -> dict[str, Any]:
    """An object built in Python as plain values: its class path and arguments (a network's ``config``, a partial's
    keywords), the form the command line saves."""
    if isinstance(value, functools.partial):
        return {"class_path": import_path(value.func), "init_args": dict(value.keywords)}
    if isinstance(value, type):
        return {"class_path": import_path(value), "init_args": {}}
    if isinstance(value, Network):
        return {"class_path": import_path(type(value)), "init_args": dict(value.config)}
    raise UserInputError(
        f"a {type(value).__name__} cannot be recorded in a checkpoint: give a Network (its config holds its "
        "arguments), a class, or functools.partial(class, **arguments)"
    )


def from_spec(spec: Any, base: type, what: str, source: str | Path, build: bool = True) -> Any:
    """Rebuild a ``{"class_path", "init_args"}`` spec from a checkpoint: the class from the allow-list of ``base``'s
    subclasses; built (``build``) or as a factory of its arguments."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise UserInputError(f"{source} does not record its {what} (hyper_parameters.{what})")
    cls = allowed_class(spec["class_path"], base, what)
    arguments = dict(spec.get("init_args") or {})
    return cls(**arguments) if build else functools.partial(cls, **arguments)
