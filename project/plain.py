"""Values as plain data (dicts, lists, numbers, strings): what checkpoints record and resumed runs compare."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jsonargparse import Namespace


def plain(value: Any, convert: Callable[[Any], Any] | None = None) -> Any:
    """``value`` as plain dicts, lists and values: the command line's ``Namespace`` as a dict, tuples as lists, and
    anything else through ``convert`` first (a network object as its class path and arguments)."""
    if convert is not None:
        value = convert(value)
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(key): plain(item, convert) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item, convert) for item in value]
    return value
