"""A sweep's spec: the YAML file that says what every trial trains and what it searches, read and checked whole
before any trial runs.

    configs: [mnist]                     # the presets every trial stacks, in order (as --config)
    options:                             # fixed options of `python -m project fit`
      trainer.max_epochs: 1
    space:                               # what each trial samples: any option of `python -m project fit`
      model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
      model.network.init_args.width: {choices: [16, 32, 64]}
      data.batch_size: {low: 32, high: 256, step: 32}
    trials: 20                           # finished trials (complete or pruned) the study reaches
    sampler: tpe                         # or {name: tpe, seed: 42, n_startup_trials: 5}; random, qmc
    pruner: median                       # or {name: median, n_startup_trials: 5}; percentile, hyperband, none, ...
    objective: {metric: val/loss, direction: minimize}   # default: the task's monitored metric
    enqueue: [{model.optimizer.init_args.lr: 0.003}]      # trials to run first (the rest of the space sampled)
    heartbeat: {interval: 10, grace: 30}  # seconds: a trial silent for `grace` is interrupted

Every problem is one :class:`~project.errors.UserInputError` line naming the key and what it takes. Whether the
options exist and take the values the space can sample is checked by the command line's own parser
(:mod:`project.sweeps.command`), which knows every option of ``fit``.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from project.cli.presets import CONFIG_DIR, checked_config
from project.errors import UserInputError
from project.files.yaml_text import read_yaml
from project.sweeps.samplers import (
    DEFAULT_SEED,
    PRUNERS,
    SAMPLERS,
    build,
    check_arguments,
    optuna_class,
    try_on_a_study,
)

_SWEEP_DIR = CONFIG_DIR / "sweeps"
"""The sweep specs shipped with the project: ``python -m project sweep NAME`` finds ``NAME.yaml`` here."""
_SPEC_KEYS = ("configs", "options", "space", "trials", "sampler", "pruner", "objective", "enqueue", "heartbeat")
_RESERVED_OPTIONS = (
    *(f"trainer.logger{part}" for part in ("", ".class_path", ".init_args")),
    *(
        f"trainer.logger{init_args}.{name}"
        for init_args in ("", ".init_args")
        for name in ("save_dir", "name", "version")
    ),
    "run",
    "ckpt_path",
    "test_after_fit",
    "print_config",
)
"""Options the sweep sets itself for each trial: its run folder and name (the logger's other options are free), the
checkpoint a retried trial resumes, no test after fit; the presets are the spec's ``configs``."""
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\+?")
"""An option of ``fit`` as a spec names it: ``trainer.max_epochs`` (``trainer.callbacks+`` appends)."""
_DIRECTIONS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize", "min": "minimize"}


@dataclass(frozen=True)
class Param:
    """One searched option: a float or int range (``low``, ``high``, ``log``, ``step``) or a list of ``choices``."""

    option: str
    kind: str  # "float", "int" or "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` (an ``optuna.Trial``) samples for this option."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.option, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.option, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.option, self.low, self.high, step=self.step, log=self.log)

    def probe(self, index: int) -> Any:
        """A value the space can sample, for checking the options before any trial: the ends of a range in turn,
        each choice in turn."""
        if self.kind == "categorical":
            return self.choices[index % len(self.choices)]
        if index % 2 == 0:
            return self.low
        if self.step:  # Optuna lowers `high` to the last value of the grid
            steps = math.floor((self.high - self.low) / self.step + 1e-9)
            return self.low + steps * self.step
        return self.high

    def describe(self) -> dict[str, Any]:
        """The distribution as plain values (compared when a sweep continues a study)."""
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        described: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            described["log"] = True
        if self.step is not None:
            described["step"] = self.step
        return described


@dataclass(frozen=True)
class Objective:
    """The validation metric a trial's value is: its best over the validations of the run."""

    metric: str
    direction: str  # "maximize" or "minimize"

    @property
    def mode(self) -> str:
        return "max" if self.direction == "maximize" else "min"

    def better(self, value: float, than: float | None) -> bool:
        return than is None or (value > than if self.direction == "maximize" else value < than)


@dataclass
class SweepSpec:
    """A spec file, read and checked (:func:`load_spec`)."""

    path: Path
    configs: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    space: list[Param] = field(default_factory=list)
    trials: int = 20
    sampler: str = "tpe"
    sampler_args: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    pruner_args: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    """The objective's metric named by the spec; ``None``: the task's monitored metric (known once the data is)."""
    direction: str | None = None
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    heartbeat_interval: int = 10
    grace_period: int = 30

    @property
    def seed(self) -> int:
        return self.sampler_args.get("seed", DEFAULT_SEED)

    def identity(self, objective: Objective) -> str:
        """What a study is: its space and objective, as text (a second sweep on the same study must search the same)."""
        space = {param.option: param.describe() for param in self.space}
        return json.dumps({"space": space, "objective": [objective.metric, objective.direction]}, sort_keys=True)

    def fit_args(self) -> list[str]:
        """The spec's presets and fixed options as ``fit`` arguments."""
        args = [arg for config in self.configs for arg in ("--config", config)]
        return args + [f"--{option}={option_value(value)}" for option, value in self.options.items()]


def option_value(value: Any) -> str:
    """``value`` as the command line takes it (jsonargparse reads option values as YAML)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n").removesuffix("\n...")


def _spec_path(name: str) -> Path:
    """A spec file: ``name`` itself, or ``name`` (with or without ``.yaml``) in ``project/configs/sweeps/``."""
    candidates = [Path(name), _SWEEP_DIR / name, _SWEEP_DIR / f"{name}.yaml"]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        shipped = ", ".join(sorted(path.stem for path in _SWEEP_DIR.glob("*.yaml"))) or "none"
        raise UserInputError(f"sweep spec {name}: no such file, and no shipped spec of that name ({shipped})")
    return found


def load_spec(name: str) -> SweepSpec:
    """Read the spec ``name`` (:func:`_spec_path`) and check everything that can be checked without the command
    line's parser; each problem is one :class:`UserInputError` line."""
    path = _spec_path(name)
    content = read_yaml(path.read_text(), f"sweep spec {path}")
    if not isinstance(content, dict):
        raise UserInputError(f"sweep spec {path}: expected a mapping with keys {', '.join(_SPEC_KEYS)}")
    where = f"sweep spec {path}"
    for key in content:
        if key not in _SPEC_KEYS:
            raise UserInputError(
                f"{where}: {key!r} is not a key{_close_match(str(key), _SPEC_KEYS)} (keys: {', '.join(_SPEC_KEYS)})"
            )
    spec = SweepSpec(path=path)
    spec.configs = _read_configs(content.get("configs", []), path)
    spec.options = _read_options(content.get("options") or {}, f"{where}: options")
    space = content.get("space")
    if not isinstance(space, dict) or not space:
        raise UserInputError(
            f"{where}: space must map at least one option to a distribution, e.g. "
            "model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}"
        )
    spec.space = [_read_param(option, spec_, f"{where}: space") for option, spec_ in space.items()]
    for param in spec.space:
        if param.option in spec.options:
            raise UserInputError(f"{where}: {param.option} is both fixed in options and searched in space")
    spec.trials = _read_trials(content.get("trials", spec.trials), f"{where}: trials")
    spec.sampler, spec.sampler_args = _read_named(content.get("sampler", "tpe"), SAMPLERS, f"{where}: sampler")
    spec.pruner, spec.pruner_args = _read_named(content.get("pruner", "median"), PRUNERS, f"{where}: pruner")
    sampler, pruner = build(spec.sampler, spec.sampler_args, SAMPLERS), build(spec.pruner, spec.pruner_args, PRUNERS)
    try_on_a_study(sampler, pruner, spec.space, where)
    spec.metric, spec.direction = _read_objective(content.get("objective"), f"{where}: objective")
    spec.enqueue = _read_enqueue(content.get("enqueue") or [], spec.space, f"{where}: enqueue")
    spec.heartbeat_interval, spec.grace_period = _read_heartbeat(content.get("heartbeat") or {}, f"{where}: heartbeat")
    return spec


def _close_match(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _read_configs(configs: Any, spec: Path) -> list[str]:
    """The presets every trial stacks: names of presets, files where the command runs, or files beside the spec."""
    if isinstance(configs, str):
        configs = [configs]
    if not isinstance(configs, list) or not all(isinstance(name, str) for name in configs):
        raise UserInputError(f"sweep spec {spec}: configs must be a list of preset names or files, e.g. [mnist]")
    beside = [spec.parent / name for name in configs]
    return [
        checked_config(str(near) if near.is_file() and not Path(name).is_file() else name)
        for name, near in zip(configs, beside, strict=True)
    ]


def option_key(option: Any, where: str) -> str:
    """An option's key as ``fit`` spells it after ``--`` (``trainer.max_epochs``); refused for the sweep's own."""
    key = option.removeprefix("--") if isinstance(option, str) else option
    if isinstance(option, str) and option.lstrip("-") in ("c", "config"):
        raise UserInputError(f"{where}: {option} is not taken here: presets go in the spec's configs: [...] list")
    if not isinstance(key, str) or not _OPTION_NAME.fullmatch(key):
        raise UserInputError(
            f"{where}: {option!r} is not an option name (write it as fit takes it: trainer.max_epochs)"
        )
    if isinstance(key, str) and key.rstrip("+") == "trust":  # a spec is data: it never names code to import
        raise UserInputError(f"{where}: {option} is not taken in a spec: only the command line trusts a module")
    if key in _RESERVED_OPTIONS:
        raise UserInputError(
            f"{where}: {key} is set by the sweep for each trial (its run folder, the checkpoint "
            "a retried trial resumes, no test after fit); leave it out"
        )
    return key


def _read_options(options: Any, where: str) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise UserInputError(f"{where}: expected a mapping of fit options to values, e.g. {{trainer.max_epochs: 1}}")
    return {option_key(option, where): value for option, value in options.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_param(option: Any, spec: Any, where: str) -> Param:
    key = option_key(option, where)
    what = f"{where}: {key}"
    ranges = "{low: 1.0e-4, high: 1.0e-2, log: true}, {low: 32, high: 256, step: 32} or {choices: [16, 32, 64]}"
    if not isinstance(spec, dict):
        raise UserInputError(f"{what}: expected a distribution such as {ranges}, got {spec!r}")
    allowed = ("choices",) if "choices" in spec else ("low", "high", "log", "step")
    for name in spec:
        if name not in allowed:
            kind = "a list of choices takes only choices" if "choices" in spec else "a range takes low, high, log, step"
            raise UserInputError(
                f"{what}: {name!r} is not a distribution key{_close_match(str(name), allowed)} ({kind})"
            )
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserInputError(f"{what}: choices must be a non-empty list, got {choices!r}")
        for choice in choices:
            if choice is not None and not isinstance(choice, bool | int | float | str):
                raise UserInputError(
                    f"{what}: each choice must be a number, text, true/false or null (Optuna "
                    f"stores them as such), got {choice!r}"
                )
        return Param(key, "categorical", choices=tuple(choices))
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    if not _is_number(low) or not _is_number(high):
        raise UserInputError(f"{what}: a range needs numbers low and high, got low={low!r}, high={high!r}")
    if low > high:
        raise UserInputError(f"{what}: low ({low}) is above high ({high})")
    if not isinstance(log, bool):
        raise UserInputError(f"{what}: log must be true or false, got {log!r}")
    if step is not None and (not _is_number(step) or step <= 0):
        raise UserInputError(f"{what}: step must be a number above 0, got {step!r}")
    if log and low <= 0:
        raise UserInputError(f"{what}: a log range needs low above 0, got {low}")
    integer = all(isinstance(value, int) for value in (low, high, step if step is not None else 1))
    if log and step is not None and not (integer and step == 1):
        raise UserInputError(f"{what}: a range takes log or step, not both")
    return Param(key, "int" if integer else "float", low=low, high=high, log=log, step=step)


def _read_trials(trials: Any, where: str) -> int:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise UserInputError(f"{where}: expected a whole number of trials, 1 or more, got {trials!r}")
    return trials


def _read_named(value: Any, known: dict[str, str], where: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``{name: NAME, ARG: VALUE, ...}``: one of ``known`` and the keyword arguments of its Optuna class,
    checked by building it now."""

    args: dict[str, Any] = {}
    if isinstance(value, dict):
        args = dict(value)
        value = args.pop("name", None)
    if not isinstance(value, str) or value not in known:
        raise UserInputError(
            f"{where}: {value!r} is not one{_close_match(str(value), known)} (use one of "
            f"{', '.join(known)}, or {{name: NAME, ...its arguments}})"
        )
    accepted = [name for name in inspect.signature(optuna_class(value, known)).parameters if name != "search_space"]
    for name in args:
        if name not in accepted:
            raise UserInputError(
                f"{where}: {value} takes no {name!r}{_close_match(name, accepted)} (it takes "
                f"{', '.join(accepted) or 'nothing'})"
            )
    check_arguments(value, args, known, where)
    try:
        build(value, args, known)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{where}: {value} {args}: {str(error).strip().splitlines()[0]}") from None
    return value, args


def _read_objective(objective: Any, where: str) -> tuple[str | None, str | None]:
    if objective is None or objective == "default":
        return None, None
    if not isinstance(objective, dict) or set(objective) - {"metric", "direction"}:
        raise UserInputError(
            f"{where}: expected {{metric: val/NAME, direction: maximize|minimize}}, or leave it out "
            "for the task's monitored metric"
        )
    metric, direction = objective.get("metric"), objective.get("direction")
    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise UserInputError(
            f"{where}: metric must be a validation metric, val/NAME (the sweep picks by validation), got {metric!r}"
        )
    if direction not in _DIRECTIONS:
        raise UserInputError(f"{where}: direction must be maximize or minimize, got {direction!r}")
    return metric, _DIRECTIONS[direction]


def _read_enqueue(enqueue: Any, space: list[Param], where: str) -> list[dict[str, Any]]:
    options = {param.option: param for param in space}
    if not isinstance(enqueue, list) or not all(isinstance(entry, dict) for entry in enqueue):
        raise UserInputError(f"{where}: expected a list of {{option: value}} mappings, the first trials to run")
    for entry in enqueue:
        for option, value in entry.items():
            param = options.get(option)
            if param is None:
                raise UserInputError(f"{where}: {option} is not in the space{_close_match(str(option), options)}")
            inside = (
                value in param.choices
                if param.kind == "categorical"
                else (_is_number(value) and param.low <= value <= param.high)
            )
            if not inside:
                raise UserInputError(f"{where}: {option}={value!r} is outside its distribution {param.describe()}")
    return enqueue


def _read_heartbeat(heartbeat: Any, where: str) -> tuple[int, int]:
    if not isinstance(heartbeat, dict) or set(heartbeat) - {"interval", "grace"}:
        raise UserInputError(f"{where}: expected {{interval: SECONDS, grace: SECONDS}}")
    interval, grace = heartbeat.get("interval", 10), heartbeat.get("grace")
    grace = 3 * interval if grace is None and isinstance(interval, int) else grace
    for name, value in (("interval", interval), ("grace", grace)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{where}: {name} must be a whole number of seconds, 1 or more, got {value!r}")
    if grace <= interval:
        raise UserInputError(f"{where}: grace ({grace} s) must be longer than interval ({interval} s)")
    return interval, grace
