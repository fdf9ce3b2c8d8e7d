"""Values as plain data (dicts, lists, numbers, strings): what checkpoints record, resumed runs compare, and options
typed :data:`PlainData` take from the command line and config files."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml
from jsonargparse import Namespace, get_loader, set_parsing_settings
from jsonargparse.typing import register_type


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


class PlainData:
    """The type of an option that takes data of any shape (a task's ``metrics``, a transform's arguments): text,
    numbers, true/false, null, and lists and mappings of them, kept exactly as given.

    An option typed ``Any`` would let the parser import and build a ``{class_path: ..., init_args: ...}`` given as its
    value; one typed ``PlainData`` keeps such a mapping as a mapping, for the code that reads the option to look the
    class up in its own allow-list (extra metrics: torchmetrics; augmentation: torchvision's transforms)."""


_MAX_PLAIN_VALUES = 1_000_000
"""The most values (scalars, lists and mappings) one :class:`PlainData` option holds."""


def _plain_data(value: Any) -> Any:
    """``value`` itself when it is plain data (:class:`PlainData`): text on the command line read as YAML, as for any
    option; ``ValueError`` otherwise, and beyond :data:`_MAX_PLAIN_VALUES` values (YAML aliases expanded)."""
    if isinstance(value, str):
        try:
            value = get_loader("yaml")(value)
        except yaml.YAMLError:
            return value
    return _copied_plain(value, [_MAX_PLAIN_VALUES])


def _copied_plain(value: Any, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"more than {_MAX_PLAIN_VALUES:,} values (YAML aliases expanded)")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_copied_plain(item, budget) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _copied_plain(item, budget) for key, item in value.items()}
    raise ValueError(f"expected text, a number, true/false, null, or a list or mapping of them, got {value!r}")


register_type(PlainData, serializer=lambda value: value, deserializer=_plain_data)
# A value looking like {class_path: ..., init_args: ...} given to an option that takes anything (a library's option
# typed Any) is kept as such, not built: jsonargparse 5 will do so by default.
set_parsing_settings(instantiate_subclass_spec_in_any=False)
