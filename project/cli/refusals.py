"""One line for each way the command line's parser can refuse an option.

jsonargparse explains a refused value over many lines (every type of a union, every class it tried); this module
keeps what a user needs: the option, what it takes, what was given, and for an unknown option the closest name or
the list of names allowed there.

What can be known before the parser runs is checked before it runs, by the code that knows it: the subcommand
(:func:`project.cli.commands.refuse_unknown_subcommand`), ``--config`` files (:mod:`project.cli.presets`), the options
of the subcommands whose options are fixed (:mod:`project.cli.commands`), and the value the user gave, which is read
from the user's own arguments (:func:`_given_value`). The regular expressions left read what only the parser knows,
from its message: jsonargparse 4.53 reports every refusal as text alone (``jsonargparse._util.argument_error`` builds
``ArgumentError(None, message)``: no option, no value, no type), and which options a class option takes is known only
while it parses (``--model.network X`` brings X's); its union messages are an open issue upstream
(https://github.com/omni-us/jsonargparse/issues/695). Each says which message of which library it reads.
"""

from __future__ import annotations

import difflib
import re
import signal
import sys
from argparse import ArgumentError
from collections.abc import Callable
from pathlib import Path
from typing import Any

from project.cli.presets import config_files, option_values
from project.errors import ReportedError, causes, disk_full, first_line, install_command
from project.files.yaml_text import read_yaml
from project.trusted import HOW_TO_TRUST, untrusted_class, untrusted_code

SUBCOMMANDS = ("fit", "validate", "test")
"""LightningCLI's subcommands, the Trainer's (:mod:`project.cli.app`); Lightning's ``predict`` is left out: new images
are ``python -m project predict``'s, written to a CSV. The other subcommands: :data:`project.cli.commands.COMMANDS`."""
_PIECES = ("model.task", "model.optimizer", "model.lr_scheduler")
"""Options that take a class: an option of theirs follows the class (``--model.task Multiclass`` before
``--model.task.label_smoothing 0.1``)."""
_MODEL_SECTION_OPTIONS = ("optimizer", "lr_scheduler")
"""LightningCLI's own top-level ``--optimizer`` and ``--lr_scheduler``, off here (``auto_configure_optimizers=False``:
the model configures its optimizer and schedule): they are ``--model.optimizer`` and ``--model.lr_scheduler``."""
_NON_FINITE = {"nan", "inf", "-inf", "+inf", ".nan", ".inf", "-.inf", "infinity", "-infinity"}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


def explain_cli_error(error: ArgumentError, parser: Any, args: list[str]) -> str:
    """LightningCLI's parser's ``error`` as one line (:func:`explain_parse_error`, with the options of the subcommand
    in ``args``)."""
    return explain_parse_error(error, args, lambda: _known_options(parser, args))


def explain_parse_error(error: ArgumentError, args: list[str], known: Callable[[], list[str]]) -> str:
    """The parser's ``error`` as one line; ``args`` are what the user gave, ``known`` lists the options that exist
    (asked only for an unknown option)."""
    message = str(error)
    denied = re.search(r"^(.*)Importing '([^']+)' is not allowed, denied by", message, flags=re.MULTILINE)
    if denied:  # code outside the libraries and the modules trusted (project.trusted.guard_parser_imports)
        key, path = ".".join(_parser_keys(message)) or "an option", denied.group(2)
        return untrusted_code(key, path) if "expects a function" in denied.group(1) else untrusted_class(key, path)
    # jsonargparse: "Subcommand 'fit' does not accept option 'x'", "Option 'x' is not accepted" (ArgumentParser.
    # validate), argparse: "unrecognized arguments: --x 1": the unknown option is named in the text only.
    unknown = (
        re.search(r"does not accept option '([^']+)'", message)
        or re.search(r"[Uu]nrecognized arguments: --?([^\s=]+)", message)
        or re.search(r"Option '([^']+)' is not accepted", message)
    )
    if unknown:
        name = unknown.group(1)
        keys = _parser_keys(message)
        if keys and ("is not accepted" in unknown.group(0) or "nrecognized" in unknown.group(0)):
            name = f"{keys[0]}.{name}"  # an option of a class's piece: data.split.nope
        return unknown_option(name, known())
    key = ".".join(_parser_keys(message)) or "an option"
    value = _given_value(key, args)
    class_problem = _class_argument_problem(message, key)
    if class_problem:
        return class_problem
    # Before the types of a union (a logger option is a class or a bool): jsonargparse's adapt_typehints, a class
    # path that imports, but is not a subclass of the option's base.
    subclass = re.search(r"(Import path does not correspond to a subclass of \w+)", message)
    if subclass:
        return f"{key}: {value or 'the class'} cannot be used here ({subclass.group(1)})"
    # jsonargparse's adapt_typehints: a class path that failed, and why (the error's first line); where that is an
    # option of the class ("Parser key ..."), the option's own problem is said below.
    problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", message)
    if problem and not problem.group(2).lstrip().startswith("Parser key"):
        own = f"; {HOW_TO_TRUST}" if any(isinstance(cause, ModuleNotFoundError) for cause in causes(error)) else ""
        return f"{key}: {problem.group(1)} cannot be used here ({problem.group(2).strip()}){own}"
    expected = _expected_type(message, value)
    shown = repr(value) if value is not None else "its value"
    if expected and expected.startswith("dot import path"):
        return (
            f"{key}: {shown} is not a class that can be imported here; give its name or its full import path"
            + _known_classes(key)
        )
    if expected:
        return f"{key}: expected {expected}" + (f", got {shown}" if value is not None else "")
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines or key == "an option":  # argparse's own, which names the option: "argument --x: expected one ..."
        return lines[-1] if lines else message
    return f"{key}: {lines[-1]}"


def _parser_keys(message: str) -> list[str]:
    """The option named by each ``Parser key "..."`` level, outermost first (``data``, ``dataset``).

    jsonargparse's ``TypeError(f'Parser key "{key}": ...')`` (``ActionTypeHint``, ``ArgumentParser``): which option
    failed, among the many of a config file, is in the text only."""
    keys: list[str] = []
    for key in re.findall(r'Parser key "([^"]+)"', message):
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def _given_value(key: str, args: list[str]) -> str | None:
    """What the user gave for the option ``key`` (``data.batch_size``), as text: the last ``--key VALUE`` of ``args``,
    else the last ``--config`` file that sets it; ``None`` when neither does (a preset's own value). ``init_args``
    levels may be given or left out on either side."""
    wanted = _plain_key(key)
    given = [value for option, value in option_values(args) if _plain_key(option.strip("-+")) == wanted]  # (+=)
    if given:
        return given[-1]
    for path in reversed(config_files(args)):
        content = read_yaml(Path(path).read_text(), path) if Path(path).is_file() else None
        found = _value_at(content, wanted.split("."))
        if found is not None:
            return str(found)
    return None


def _plain_key(key: str) -> str:
    return key.replace(".init_args.", ".").removesuffix(".init_args")


def _value_at(content: Any, keys: list[str]) -> Any:
    """The value under ``keys`` in a config file's content (through ``init_args`` levels), or ``None``."""
    for key in keys:
        if isinstance(content, dict) and key not in content and isinstance(content.get("init_args"), dict):
            content = content["init_args"]
        if not isinstance(content, dict) or key not in content:
            return None
        content = content[key]
    return None if isinstance(content, dict | list) else content


def _class_argument_problem(message: str, key: str) -> str | None:
    """A class named by a short name that more than one imported class has, or built without an argument it
    requires (``--model.lr_scheduler StepLR`` without ``step_size``), in one line; ``None`` for other messages.

    jsonargparse's ``resolve_class_path_by_name`` says which classes share the name, and the parser's check of
    required arguments which ones a class lacks (with the class path it resolved), in their messages only."""
    ambiguous = re.search(
        r"Multiple subclasses with name (\w+)\. Give the full class path[^:]*: (.+?)\.?$", message, re.M
    )
    if ambiguous:
        return f"{key}: {ambiguous.group(1)} names more than one class; give the full path of one: {ambiguous.group(2)}"
    required = re.search(r"the following arguments are required: ([\w, ]+)", message)
    if required:
        named = re.search(r"class_path='([^']+)'", message)
        first = required.group(1).split(",")[0].strip()
        return f"{key}: {named.group(1) if named else 'the class'} needs {required.group(1)} (--{key}.{first} VALUE)"
    return None


def _known_classes(key: str) -> str:
    """For an optimizer or learning-rate scheduler option, `` (torch.optim has ...)``: the names it takes."""
    import torch

    for suffix, module, base in (
        ("optimizer", torch.optim, torch.optim.Optimizer),
        ("lr_scheduler", torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler),
    ):
        if key.endswith(suffix):
            names = sorted(
                name
                for name, value in vars(module).items()
                if isinstance(value, type) and issubclass(value, base) and value is not base and name[0] != "_"
            )
            return f" ({module.__name__} has {', '.join(names)})"
    return ""


def _expected_type(message: str, value: str | None) -> str | None:
    """What the option takes, in words, from the innermost ``Expected a ...`` that is not ``None``.

    jsonargparse's ``raise_unexpected_value`` (``adapt_typehints``) names the type in the text only; which type a
    class's argument has is known only to the parser, once it has chosen the class."""
    candidates = [
        found.strip().rstrip(".")
        for found in re.findall(r"Expected a (.+?)(?:\. Got value:.*)?$", message, flags=re.MULTILINE)
        if "NoneType" not in found and not found.startswith("path but")
    ]
    if len(candidates) > 1:  # a union: the dot-import-path alternative is the parser's, not the user's, concern
        candidates = [found for found in candidates if not found.startswith("dot import path")] or candidates
    if not candidates:
        return None
    text = candidates[-1]
    if text.startswith("typing.Literal["):
        return "one of " + ", ".join(re.findall(r"'([^']*)'", text))
    name = re.fullmatch(r"<class '(\w+)'>", text)
    if not name:
        return text
    if name.group(1) == "float" and str(value).lower() in _NON_FINITE:
        return "a finite number"
    return _TYPE_WORDS.get(name.group(1), name.group(1))


def _known_options(parser: Any, args: list[str] | None) -> list[str]:
    """Every option of the subcommand in ``args`` as a user types it (``data.batch_size``, ``model.optimizer.lr``)."""
    subcommand = next((arg for arg in args or [] if arg in SUBCOMMANDS), "fit")
    try:
        defaults = parser.parse_args([subcommand])[subcommand]
    except Exception:  # the defaults themselves do not parse: no list to offer
        return []
    return sorted({key.replace(".init_args.", ".") for key in vars(defaults.as_flat())})


def unknown_option(name: str, known: list[str]) -> str:
    if name == "weights_only":
        return "weights_only is not an option: checkpoints are always read with weights_only=True (plain data only)"
    if name.partition(".")[0] in _MODEL_SECTION_OPTIONS:
        return f"{name} is not an option; it is model.{name} (the model configures its optimizer and schedule itself)"
    section, _, leaf = name.rpartition(".")
    if section in _PIECES and not any(key.startswith(f"{section}.") for key in known):
        return (
            f"{name} is not an option of {section} as it is given (none): name its class first, then its options "
            f"(--{section} CLASS --{name} VALUE, such as --model.task Multiclass --model.task.label_smoothing 0.1)"
        )
    prefix = f"{section}." if section else ""
    leaves = [key[len(prefix) :] for key in known if key.startswith(prefix) and "." not in key[len(prefix) :]]
    close = difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.75)
    if close == [leaf]:  # the option exists, but on another entry of a list (several loggers, several callbacks)
        return (
            f"{name} is not an option of the {section} entry added last, which --{name} sets: with several entries, "
            f"give it right after the --config or +=CLASS that adds its entry, or in a --config file"
        )
    if close:
        return f"{name} is not an option; did you mean {prefix}{close[0]}?"
    elsewhere = [key for key in known if key.rpartition(".")[2] == leaf.replace("-", "_")]
    if len(elsewhere) == 1:  # --data-dir, --batch-size, --data_dir: the name as the options spell it
        return f"{name} is not an option; did you mean {elsewhere[0]}?"
    siblings = sorted(
        {f"{section}.{key[len(section) + 1 :].split('.')[0]}" for key in known if key.startswith(f"{section}.")}
    )
    if siblings:
        return f"{name} is not an option; {section} takes {', '.join(siblings)}"
    keys = [key for key in known if not key.startswith("__")]  # (jsonargparse's __default_config__)
    tops = [key.split(".")[0] for key in keys]
    sections = sorted({top if tops.count(top) > 1 else key for top, key in zip(tops, keys, strict=True)})
    if not section and sections:
        return f"{name} is not an option; the options are {', '.join(sections)} (--help says each one)"
    return f"{name} is not an option (--help lists them all)"


def refuse_replaced_callbacks(args: list[str]) -> str | None:
    """The refusal of ``--trainer.callbacks X`` (a whole new list) on the command line, or ``None``.

    jsonargparse replaces a list given plainly, so ``--trainer.callbacks EarlyStopping`` would silently drop the
    preset's callbacks: no ``last.ckpt``, no exact resume, no TensorBoard reports. ``+=`` appends; a list in a
    ``--config`` file still replaces it on purpose (``callbacks: []``, as the ``study`` modifier does).
    """
    for index, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name == "--trainer.callbacks":
            given = value or (args[index + 1] if index + 1 < len(args) else "")
            return (
                f"--trainer.callbacks {given} would replace the preset's callbacks (best and last checkpoints, exact "
                f"resume, TensorBoard reports, progress lines): add it with --trainer.callbacks+={given or 'X'} "
                f"(its options as --trainer.callbacks.NAME VALUE), or list every callback in a --config file"
            )
    return None


def _missing_package(error: BaseException) -> str | None:
    """One line for a logger, callback or other class whose package is not installed, or ``None``.

    Lightning says ``Requirement 'wandb>=0.12.10' not met`` (a ModuleNotFoundError without a module name); Python says
    ``No module named 'x'``. Either is looked for along the chain of causes jsonargparse wraps around it. A module of
    this project that cannot be imported, or a name missing from an installed package, is a bug: not said here.
    """
    for cause in causes(error):
        if isinstance(cause, ModuleNotFoundError):
            # Lightning 2.6 raises ModuleNotFoundError(str(RequirementCache(...))) (lightning.pytorch.loggers.wandb,
            # ...): no name attribute; the package and the version it needs are in the text only.
            required = re.search(r"Requirement '([A-Za-z0-9_.\-]+)([^']*)' not met", str(cause))
            package, version = required.groups() if required else ((cause.name or "").split(".")[0], "")
            if package and package != "project":
                command = install_command(package, version)
                return f"the {package} package is not installed, and this run needs it: {command}"
    return None


def explain(error: Exception) -> tuple[str, int] | None:
    """The one-line message and exit status for an error that is not a bug, or ``None`` for one that is.

    jsonargparse wraps the errors raised while it instantiates classes: the project's own is looked for behind them.
    """
    reported = next((cause for cause in causes(error) if isinstance(cause, ReportedError)), None)
    if reported is not None:
        return str(reported), reported.exit_code
    missing = _missing_package(error)
    if missing is not None:
        return missing, 2
    if isinstance(error, _lightning_class("lightning.fabric.utilities.exceptions", "MisconfigurationException")):
        # Lightning's word for a Trainer setting it cannot use
        return f"trainer: {first_line(error)}", 2
    full = disk_full(error)
    if full is not None:
        return f"No space left on device while writing {full.filename or 'a file of the run'}: free some space", 1
    return None


def exit_on_refusal(command: Callable[[], Any], stopped: str) -> None:
    """Run ``command`` as a program: bad input ends with one ``error:`` line and its exit status (2), not a
    traceback; SIGTERM (a preempted job), which Lightning raises as a ``SystemExit`` of status 0, says ``stopped`` and
    exits with 143, so that a scheduler does not take it for a finished job; Ctrl-C (``KeyboardInterrupt``) says it
    too, without a traceback, and exits with 130. ``stopped`` names the signal and status as ``{signal}`` and
    ``{status}`` (``"fit: stopped by {signal} (exit status {status})"``)."""
    try:
        command()
    except SystemExit as stop:
        if not isinstance(stop, _lightning_class("lightning.pytorch.utilities.exceptions", "SIGTERMException")):
            raise
        print(stopped.format(signal="SIGTERM", status=128 + signal.SIGTERM), flush=True)
        raise SystemExit(128 + signal.SIGTERM) from None
    except KeyboardInterrupt:
        print(stopped.format(signal="Ctrl-C", status=128 + signal.SIGINT), flush=True)
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as error:
        explained = explain(error)
        if explained is None:
            raise
        message, exit_code = explained
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(exit_code) from None


def _lightning_class(module: str, name: str) -> type | tuple[()]:
    """Lightning's exception class ``module.name`` for ``isinstance``, or ``()`` (matching nothing) while Lightning is
    not loaded, when nothing can have raised it: a subcommand that runs no Trainer answers ``--help`` and its
    refusals without loading Lightning (seconds)."""
    return getattr(sys.modules.get(module), name, ())
