"""YAML read as plain data, within bounds: a config, a sweep spec or a run's saved config is text from anywhere.

YAML's aliases let a 1 KB file stand for gigabytes once its values are copied (the "billion laughs"), and nesting
without end exhausts the parser's stack. :func:`read_yaml` refuses both before anything is built from the text:
at most :data:`_MAX_CHARACTERS` characters (of text, and of values with every alias expanded) and :data:`_MAX_VALUES`
values with every alias expanded, and no value that contains itself. :func:`bounded_loader` puts the same bounds in
front of another YAML loader (the command line's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from project.errors import UserInputError, first_line

_MAX_CHARACTERS = 10_000_000
"""The longest YAML text read (configs and specs are a few kilobytes), and the most characters its values may hold
once its aliases are expanded."""
_MAX_VALUES = 1_000_000
"""The most values (scalars, lists and mappings) a YAML text may stand for once its aliases are expanded."""
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_yaml_bounds(text: str, source: str) -> None:
    """Refuse ``text`` beyond the bounds (:data:`_MAX_CHARACTERS`, :data:`_MAX_VALUES`, a value inside itself);
    YAML syntax errors are left to the loader that reads it."""
    if len(text) > _MAX_CHARACTERS:
        raise UserInputError(f"{source}: {len(text):,} characters of YAML; at most {_MAX_CHARACTERS:,} are read")
    if "*" not in text and text.count("[") + text.count("{") < 1000:
        return  # no alias and little nesting: nothing to expand
    try:
        node = yaml.compose(text, Loader=_SafeLoader)
        values, characters = _expanded_size(node, {}, set(), source)
    except yaml.YAMLError:
        return
    except RecursionError:
        raise UserInputError(f"{source}: YAML nested too deeply to read") from None
    if values > _MAX_VALUES or characters > _MAX_CHARACTERS:
        amount = f"{_MAX_VALUES:,} values" if values > _MAX_VALUES else f"{_MAX_CHARACTERS:,} characters"
        raise UserInputError(
            f"{source}: its YAML aliases (*name) expand to more than {amount} (a 'billion laughs' file?); write the "
            "values out"
        )


def _expanded_size(node: Any, sizes: dict[int, tuple[int, int]], open_nodes: set[int], source: str) -> tuple[int, int]:
    """How many values ``node`` stands for with its aliases expanded, and how many characters their text holds
    (``sizes``: the nodes counted already; each count stops just past its bound)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise UserInputError(f"{source}: a YAML value contains itself (an alias inside its own anchor)")
    open_nodes.add(key)
    children: list[Any] = []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    values, characters = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
    for child in children:
        child_values, child_characters = _expanded_size(child, sizes, open_nodes, source)
        values, characters = values + child_values, characters + child_characters
    open_nodes.discard(key)
    sizes[key] = (min(values, _MAX_VALUES + 1), min(characters, _MAX_CHARACTERS + 1))
    return sizes[key]


def read_yaml(text: str, source: str) -> Any:
    """``text`` as plain data (``yaml.safe_load``); refused beyond the bounds, and where it is not valid YAML, naming
    ``source`` and the line."""
    _check_yaml_bounds(text, source)
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as error:
        marked = isinstance(error, yaml.MarkedYAMLError)  # a syntax error: where it is, and what
        mark = error.problem_mark if marked else None
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = (error.problem if marked else None) or first_line(error)
        raise UserInputError(f"{source}: not valid YAML{where}: {problem}") from None


def bounded_loader(load: Callable[[str], Any]) -> Callable[[str], Any]:
    """``load`` (a function of YAML text) with :func:`_check_yaml_bounds` in front of it."""

    def bounded(text: str) -> Any:
        _check_yaml_bounds(text, "a YAML value")
        return load(text)

    return bounded
