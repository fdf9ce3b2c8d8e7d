"""How a data module's constructor arguments become its hyper-parameters, which checkpoints keep, a resumed run is
checked against and ``python -m project evaluate`` rebuilds the module from (:func:`record_arguments`), and how the
typed pieces it is given (:class:`~project.data.splits.Split`, :class:`~project.data.labels.Labels`, ...) come back from
them (:func:`piece`).

What is recorded is what rebuilds the module: the arguments its class was given, its parents' defaults, never a
value a subclass passes its parent itself (``super().__init__(..., num_classes=10)``: given again on rebuilding, it
would reach the parent twice); Python objects (datasets, arrays) are kept out, unless the command line built them from
a class path in the config, which is then recorded. A piece (a dataclass) is recorded as the mapping of its fields,
as the command line's config holds it.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from project.errors import UserInputError

if TYPE_CHECKING:
    from project.data.base import ImageDataModule

_Piece = TypeVar("Piece")

_CLASS_PATH_KEY = "_class_path"
"""The key under which the module's class is recorded, as LightningCLI records a class it builds from a config
(``lightning.pytorch.cli.LightningCLI``: "the class_path in a special key ``_class_path``")."""


def record_arguments(module: ImageDataModule) -> None:
    """Record ``module``'s constructor arguments as its hyper-parameters (Lightning's ``save_hyperparameters``),
    called from :class:`~project.data.ImageDataModule`'s constructor, less :attr:`unrecorded_arguments` and the
    values a subclass fixes (:func:`_fixed_by_subclasses`). Built by the command line, the values are the config's (a
    class path of :attr:`class_arguments` included); built in Python, ``_class_path`` names the class, as the command
    line's does."""
    frames = _constructor_frames(module)
    fixed = _fixed_by_subclasses(frames, module.unrecorded_arguments)
    unrecorded = [*module.unrecorded_arguments, *fixed]
    module.save_hyperparameters(ignore=unrecorded, frame=frames[0] if frames else None)
    if _CLASS_PATH_KEY not in module.hparams:  # built in Python
        module.hparams[_CLASS_PATH_KEY] = f"{type(module).__module__}.{type(module).__qualname__}"
    elif module.class_arguments:  # LightningCLI hands the module its config's values (plain) as the hyper-parameters
        kept_out = [name for name in unrecorded if name not in module.class_arguments]
        module.save_hyperparameters(ignore=kept_out, frame=frames[0] if frames else None)
    for name, value in module.hparams.items():  # built in Python: a piece as its fields, plain values
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            module.hparams[name] = dataclasses.asdict(value)


def piece(
    kind: type[_Piece], value: _Piece | dict[str, Any] | None, option: str, default: _Piece | None = None
) -> _Piece:
    """A piece of a data module's arguments (a dataclass such as :class:`~project.data.splits.Split`) from what the
    constructor was given: the piece itself (the command line builds it from the config), the mapping of some of its
    fields (a checkpoint's record, a caller's shorthand: the others are ``default``'s, else the class's), or ``None``
    for ``default``. An unknown field is refused in one line naming the fields there are."""
    base = default if default is not None else kind()
    if value is None:
        return base
    if isinstance(value, kind):
        return value
    fields = [field.name for field in dataclasses.fields(kind)]
    if not isinstance(value, dict):
        raise UserInputError(f"{option} must be a {kind.__name__} or a mapping of {', '.join(fields)}; got {value!r}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise UserInputError(f"{option} has no option {unknown[0]!r}: its options are {', '.join(fields)}")
    return dataclasses.replace(base, **value)


def record_piece(module: ImageDataModule, name: str, value: Any) -> None:
    """Record the piece ``name`` as it was resolved (:func:`piece`), all its fields, where the module records it."""
    if name in module.hparams:
        module.hparams[name] = dataclasses.asdict(value)


def _constructor_frames(module: object) -> list[FrameType]:
    """The frames of the ``__init__`` methods now building ``module``, its base's first and its own class's last: the
    levels Lightning's ``save_hyperparameters`` merges the arguments of (an ``__init__`` that calls ``super()``, whose
    first argument is the module: ``lightning.pytorch.utilities.parsing.collect_init_args``)."""
    frames: list[FrameType] = []
    frame = inspect.currentframe()
    while frame is not None:
        names = frame.f_code.co_varnames[: frame.f_code.co_argcount]
        building = frame.f_code.co_name == "__init__" and "__class__" in frame.f_locals
        if building and names and frame.f_locals.get(names[0]) is module:
            frames.append(frame)
        elif frames:
            break
        frame = frame.f_back
    return frames


def _fixed_by_subclasses(frames: list[FrameType], objects: tuple[str, ...]) -> set[str]:
    """The arguments of a parent's constructor that a subclass's passes with a value of its own rather than its
    caller's: neither the outermost constructor's own parameters nor what its ``**kwargs`` took, and not the
    parameter's default. ``objects`` (Python objects, never recorded) are not compared."""
    if len(frames) < 2:
        return set()
    given = _arguments_of(frames[-1])
    fixed = set()
    for frame in frames[:-1]:
        for name, parameter in _parameters_of(frame).items():
            if name in given or name in objects:
                continue
            if parameter.default is parameter.empty or not _same_value(frame.f_locals[name], parameter.default):
                fixed.add(name)
    return fixed


def _parameters_of(frame: FrameType) -> dict[str, inspect.Parameter]:
    """The named parameters (not ``self``, ``*args``, ``**kwargs``) of the ``__init__`` running in ``frame``."""
    parameters = list(inspect.signature(frame.f_locals["__class__"].__init__).parameters.values())[1:]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {parameter.name: parameter for parameter in parameters if parameter.kind not in variadic}


def _arguments_of(frame: FrameType) -> set[str]:
    """The names of the arguments the ``__init__`` running in ``frame`` took: its parameters and its ``**kwargs``."""
    names = set(_parameters_of(frame))
    keywords = [
        parameter.name
        for parameter in inspect.signature(frame.f_locals["__class__"].__init__).parameters.values()
        if parameter.kind == inspect.Parameter.VAR_KEYWORD
    ]
    for keyword in keywords:
        names |= set(frame.f_locals.get(keyword) or {})
    return names


def _same_value(value: Any, default: Any) -> bool:
    """Whether an argument is its parameter's default (plain values: ``==``)."""
    try:
        return bool(value == default)
    except Exception:  # a value whose == is not a truth value (an array): not the default
        return False
