"""The Optuna sampler and pruner a sweep's spec names (``sampler: {name: tpe, n_startup_trials: 5}``): their names,
their arguments checked before any folder is made, and the objects built from them.

Optuna's classes take their arguments as given and use them only when a trial asks (``TPESampler(gamma="x")`` fails
at the first trial that calls it, mid-sweep). :func:`check_arguments` compares each argument with the type its
parameter declares, where that is a plain type, and refuses a function's parameter (a spec is data: it cannot give
one); :func:`try_on_a_study` then asks, reports and tells a few trials of the spec's space on a study in memory.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from project.errors import UserInputError, first_line

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "qmc": "QMCSampler"}
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}
DEFAULT_SEED = 42
"""The sampler's seed when the spec names none (each ask draws from a seed of its own derived from it)."""
_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "None": (type(None),),
}
"""The declared types a spec's argument is checked against (an ``int`` is a ``float`` too, a bool no number)."""
_TRIED_TRIALS = 3
"""How many trials :func:`try_on_a_study` asks for (the later ones see the earlier ones, as TPE's model does)."""


def optuna_class(name: str, known: dict[str, str]) -> type:
    """The Optuna class of the sampler or pruner ``name`` (a key of :data:`SAMPLERS` or :data:`PRUNERS`)."""
    import optuna

    return getattr(optuna.samplers if known is SAMPLERS else optuna.pruners, known[name])


def build(name: str, args: dict[str, Any], known: dict[str, str]) -> Any:
    """The Optuna sampler or pruner ``name`` with ``args``; the sweep's defaults where the spec says nothing (TPE:
    seeded, and ``constant_liar`` so that workers asking at once do not sample the same place)."""
    if known is SAMPLERS:
        args = {"seed": DEFAULT_SEED, **args}
        if name == "tpe":
            args = {"constant_liar": True, **args}
    return optuna_class(name, known)(**args)


def check_arguments(name: str, args: dict[str, Any], known: dict[str, str], where: str) -> None:
    """Refuse an argument of another type than its parameter declares (``int``, ``float``, ``bool``, ``str``, ``None``
    and their unions; other declarations are left to :func:`try_on_a_study`), and one for a parameter that takes a
    function (a default or a declared type that is one)."""
    parameters = inspect.signature(optuna_class(name, known)).parameters
    for key, value in args.items():
        parameter = parameters[key]
        declared = parameter.annotation
        text = declared.__name__ if isinstance(declared, type) else str(declared)
        if "Callable" in text or (parameter.default is not parameter.empty and callable(parameter.default)):
            raise UserInputError(f"{where}: {name}'s {key} takes a function, which a spec (data) cannot give")
        parts = [part.strip() for part in text.split("|")]
        if key == "seed":
            parts = ["int"]  # each ask draws from a seed derived from it (project.sweeps.storage.sampler_for)
        if not all(part in _PLAIN_TYPES for part in parts):
            continue
        allowed = tuple(kind for part in parts for kind in _PLAIN_TYPES[part])
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise UserInputError(f"{where}: {name}'s {key} must be {' or '.join(parts)}, got {value!r}")


def try_on_a_study(sampler: Any, pruner: Any, space: list[Any], where: str) -> None:
    """Ask for :data:`_TRIED_TRIALS` trials of ``space`` (the spec's ``Param`` list) with ``sampler`` (and no
    pruning), then as many with ``pruner`` (and random samples), reporting two steps and telling a value for each, on
    a study in memory: whatever either raises with its arguments is one line, before the sweep makes a folder."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line for the study in memory nor its trials
    try:
        for role, used in (("sampler", sampler), ("pruner", pruner)):
            pair = (used, optuna.pruners.NopPruner()) if role == "sampler" else (optuna.samplers.RandomSampler(0), used)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Optuna's deprecation and experimental warnings: said when used
                    _ask_and_tell(optuna.create_study(sampler=pair[0], pruner=pair[1]), space)
            except Exception as error:  # Optuna's own checks, or its use of an argument of the wrong kind
                raise UserInputError(
                    f"{where}: the {role} fails on a first few trials ({type(error).__name__}: {first_line(error)})"
                ) from None
    finally:
        optuna.logging.set_verbosity(verbosity)


def _ask_and_tell(study: Any, space: list[Any]) -> None:
    """:data:`_TRIED_TRIALS` trials on ``study``: each samples ``space``, reports two steps and is told a value."""
    for index in range(_TRIED_TRIALS):
        trial = study.ask()
        for param in space:
            param.suggest(trial)
        for step in range(2):
            trial.report(float(index + step), step)
        trial.should_prune()
        study.tell(trial, float(index))
