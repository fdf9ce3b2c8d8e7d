"""A config, a sweep's spec or best.yaml, and a received run folder never run code (project.trusted).

Each payload would create a marker file if it ran: the tests assert the file does not exist, and that the command
ends with one ``error:`` line and writes nothing. Negative controls show the same routes still take what they should
(a library's class, a function of a module the user trusts).
"""

from __future__ import annotations

import builtins
import operator
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import cli_error
from jsonargparse import Namespace
from jsonargparse import Path as ParsedPath

from project.cli import run_cli
from project.errors import UserInputError
from project.sweeps.command import main as sweep_main
from project.trusted import library_main_modules, refuse_untrusted_code

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
LAST = Path("logs") / "mnist" / "version_0" / "checkpoints" / "last.ckpt"


def system_call(marker: Path) -> str:
    """A value that runs ``touch marker`` if the parser builds it: ``os.system`` named as a class."""
    return f'{{class_path: os.system, init_args: {{command: "touch {marker}"}}}}'


PAYLOAD_OPTIONS = {
    "--model.task.label_smoothing={payload}": "model.task.label_smoothing: expected",
    "--model.task.class_weights={payload}": "model.task.class_weights",
    "--model.task.metrics={{a: {payload}}}": "os.system is not a class a config may name",
    "--data.augment.transforms=[{payload}]": "os.system is not a class a config may name",
    "--data.augment.transforms=[{{class_path: RandomCrop, init_args: {{size: {payload}}}}}]": "os.system is not a",
}


@pytest.mark.parametrize("option", PAYLOAD_OPTIONS)
def test_a_class_path_given_to_an_option_that_takes_data_is_never_built(option, quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    given = ["--model.task=Multiclass", option.format(payload=system_call(marker))]
    error = cli_error(["fit", *quick_args, *given], capsys, root=run_dir)
    assert not marker.exists()
    assert PAYLOAD_OPTIONS[option] in error


def test_a_task_that_is_code_is_never_built(quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    payload = f'{{class_path: os.system, init_args: {{command: "touch {marker}"}}}}'
    cli_error(["fit", *quick_args, f"--model.task={payload}"], capsys, root=run_dir)
    assert not marker.exists()


def test_the_same_payload_in_a_config_file_a_saved_config_and_best_yaml_is_refused(quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    payload = yaml.safe_load(system_call(marker))
    for name in ("preset.yaml", "logs_elsewhere/config.yaml", "best.yaml"):
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        task = {"class_path": "project.tasks.Multiclass", "init_args": {"metrics": {"a": payload}}}
        path.write_text(yaml.safe_dump({"model": {"task": task}}))
        cli_error(["fit", *quick_args, f"--config={path}"], capsys, root=run_dir)
    assert not marker.exists()


def test_a_sweep_spec_choice_that_names_code_is_refused_before_any_trial(fake_data_dir, run_dir, capsys):
    marker = run_dir / "ran"
    spec = {
        "configs": ["debug"],
        "options": {"data.data_dir": str(fake_data_dir), "data.split.val_size": 100, "model.task": "Multiclass"},
        "space": {"model.task.metrics": {"choices": ["{}", f"{{a: {system_call(marker)}}}"]}},
        "trials": 2,
    }
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as caught:
        sweep_main(["spec.yaml"])
    assert caught.value.code == 2
    assert "os.system is not a class a config may name" in capsys.readouterr().err
    assert not marker.exists() and not (run_dir / "logs").exists()


def test_a_library_class_or_a_trusted_function_is_still_taken(quick_args, run_dir):
    """Negative control: the walk refuses code, not classes of the libraries nor what the user trusts."""
    metric = "{acc_top3: {class_path: torchmetrics.classification.MulticlassAccuracy, init_args: {top_k: 3}}}"
    args = ["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"]
    args += ["--model.task=Multiclass", f"--model.task.metrics={metric}"]
    hook = ["--trust=helpers", "--trainer.callbacks+=LambdaCallback"]
    hook.append("--trainer.callbacks.on_fit_start=helpers.note_fit_start")
    cli = run_cli([*args, *hook])
    assert "val/acc_top3" in cli.trainer.callback_metrics and cli.trainer.fit_started_by_helpers


def test_lambda_callback_hooks_naming_library_functions_are_refused(quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    for function in ("os.system", "subprocess.getoutput", "torch.load", "builtins.print"):
        hook = ["--trainer.callbacks+=LambdaCallback", f"--trainer.callbacks.on_fit_start={function}"]
        error = cli_error(["fit", *quick_args, *hook], capsys, root=run_dir)
        assert "is code, and a config names code only from modules you trust" in error
    assert not marker.exists()


def test_a_class_of_a_module_nobody_trusted_is_refused_though_it_imports(quick_args, run_dir, capsys, monkeypatch):
    """A module on sys.path (a notebook's folder, say) is not trusted by being importable: naming it is not enough."""
    (run_dir / "planted.py").write_text("import lightning as L\nclass Spy(L.Callback):\n    pass\n")
    monkeypatch.syspath_prepend(str(run_dir))
    error = cli_error(["fit", *quick_args, "--trainer.callbacks+=planted.Spy"], capsys, root=run_dir)
    assert "planted.Spy is not a class a config may name" in error
    cli = run_cli(["fit", *quick_args, "--trust=planted", "--trainer.callbacks+=planted.Spy", "--trainer.max_epochs=1"])
    assert any(type(callback).__name__ == "Spy" for callback in cli.trainer.callbacks)


def test_python_m_project_never_imports_a_module_from_the_current_folder(fake_data_dir, tmp_path):
    folder = tmp_path / "received_run"
    folder.mkdir()
    marker = tmp_path / "ran"
    for name in ("tensorboard", "yaml", "jsonargparse", "torchvision", "rich"):
        (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write({name!r})\n")
    command = [sys.executable, "-m", "project", "fit", "--ckpt_path", "last", f"--data.data_dir={fake_data_dir}"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
    assert not marker.exists(), marker.read_text()
    assert result.returncode == 2 and "no last.ckpt under" in result.stderr, result.stderr[-2000:]


def test_an_averaged_checkpoint_whose_trained_weights_are_integers_is_refused(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--config=ema", "--trainer.max_epochs=1", "--test_after_fit=false"])
    checkpoint = torch.load(LAST, weights_only=True)
    current = checkpoint["current_model_state"]
    checkpoint["current_model_state"] = {name: tensor.long() for name, tensor in current.items()}
    torch.save(checkpoint, LAST)
    resume = ["fit", *quick_args, "--config=ema", "--trainer.max_epochs=2", "--ckpt_path=last"]
    error = cli_error(resume, capsys)
    assert "current_model_state: network.head.weight: torch.int64 in the file, torch.float32 in the network" in error
    assert not (LAST.parents[1] / "config-resume1.yaml").exists()

    checkpoint["current_model_state"] = {name: tensor[:1] for name, tensor in current.items()}  # the wrong shape
    torch.save(checkpoint, LAST)
    assert "current_model_state: network.head.weight: checkpoint (1, 128)" in cli_error(resume, capsys)
    checkpoint["current_model_state"], checkpoint["averaging_state"] = current, {"n_averaged": torch.tensor(0.5)}
    torch.save(checkpoint, LAST)
    assert "averaging_state.n_averaged is not a count" in cli_error(resume, capsys)
    assert not (LAST.parents[1] / "config-resume1.yaml").exists()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://sweeper:SECRET-PW@127.0.0.1:1/study",
        "mysql://sweeper:SECRET-PW@localhost/study",
        "nosuchdialect://sweeper:SECRET-PW@host/study",
    ],
)
def test_a_storage_url_that_cannot_be_opened_never_prints_its_password(url, fake_data_dir, run_dir, capsys):
    spec = {
        "configs": ["debug"],
        "options": {"data.data_dir": str(fake_data_dir), "data.split.val_size": 100},
        "space": {"model.optimizer.init_args.lr": {"low": 1.0e-3, "high": 1.0e-2}},
    }
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as caught:
        sweep_main(["spec.yaml", "--storage", url])
    out, err = capsys.readouterr()
    assert caught.value.code == 2 and "cannot open it" in err and "sweeper:***@" in err
    assert "SECRET-PW" not in out + err


@pytest.mark.parametrize(
    "option",
    [
        {"trainer.logger.init_args.sub_dir": "../../../../escape"},
        {"trainer.logger.init_args.sub_dir": "/tmp/escape"},
        {"trainer.default_root_dir": "elsewhere"},
    ],
)
def test_a_sweep_option_that_writes_outside_the_trial_folder_is_refused(option, fake_data_dir, run_dir, capsys):
    spec = {
        "configs": ["debug"],
        "options": {"data.data_dir": str(fake_data_dir), "data.split.val_size": 100, **option},
        "space": {"model.optimizer.init_args.lr": {"low": 1.0e-3, "high": 1.0e-2}},
    }
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as caught:
        sweep_main(["spec.yaml"])
    assert caught.value.code == 2 and "each trial writes into its own folder" in capsys.readouterr().err
    assert not (run_dir / "logs").exists() and not (run_dir.parent / "escape").exists()


def test_crafted_run_folder_files_are_one_line_before_anything_is_written(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--config=csv", "--trainer.max_epochs=1", "--test_after_fit=false"])
    folder = LAST.parents[1]
    resume = ["fit", *quick_args, "--config=csv", "--trainer.max_epochs=2", "--ckpt_path=last"]
    good = (folder / "metrics.csv").read_text()
    for crafted in ("step,epoch,val/acc\nabc,0,xyz\n", "step,epoch\n1,\x00\n", "x,y\n1,2\n"):
        (folder / "metrics.csv").write_text(crafted)
        before = sorted(path.name for path in folder.iterdir())
        assert "metrics.csv is not a table of metrics by step" in cli_error(resume, capsys)
        assert sorted(path.name for path in folder.iterdir()) == before  # no config-resume1.yaml, no event file
    (folder / "metrics.csv").write_text(good)
    for crafted in ('{"RunMLFlowLogger": "../../elsewhere"}', '{"WandbLogger": ""}', "[1]"):
        (folder / "trackers.json").write_text(crafted)
        assert "trackers.json" in cli_error(resume, capsys)
    assert not (folder / "config-resume1.yaml").exists()


def billion_laughs(levels: int = 9) -> str:
    """370 bytes of YAML that stand for 10**9 values once their aliases are expanded."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels + 1):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_bomb_in_a_config_an_option_or_a_spec_is_refused_in_bounded_memory(fake_data_dir, run_dir, capsys):
    (run_dir / "bomb.yaml").write_text(billion_laughs())
    message = "aliases (*name) expand to more than 1,000,000 values"
    assert message in cli_error(["fit", f"--data.data_dir={fake_data_dir}", "--config=bomb.yaml"], capsys)
    inline = "{" + billion_laughs().strip().replace("\n", ", ") + "}"
    bomb = ["--model.task=Multiclass", f"--model.task.metrics={inline}"]
    assert message in cli_error(["fit", f"--data.data_dir={fake_data_dir}", *bomb], capsys)
    space = "space: {model.optimizer.init_args.lr: {low: 0.001, high: 0.01}}\n"
    (run_dir / "spec.yaml").write_text(billion_laughs() + space)
    with pytest.raises(SystemExit):
        sweep_main(["spec.yaml"])
    assert message in capsys.readouterr().err
    (run_dir / "loop.yaml").write_text("a: &a [1, *a]\n")
    assert "contains itself" in cli_error(["fit", f"--data.data_dir={fake_data_dir}", "--config=loop.yaml"], capsys)


def plant_module(folder: Path, name: str, marker: Path, body: str = "") -> None:
    """``folder/name.py`` (or a package, for a dotted name) that creates ``marker`` when it is imported."""
    *packages, module = name.split(".")
    folder.mkdir(parents=True, exist_ok=True)
    for depth in range(len(packages)):
        package = folder.joinpath(*packages[: depth + 1])
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").touch()
    text = f"open({str(marker)!r}, 'a').write({name!r})\nimport lightning as L\nclass Evil(L.Callback):\n    pass\n"
    folder.joinpath(*packages, f"{module}.py").write_text(text + body)


def test_the_parser_imports_no_module_a_config_names_before_it_is_checked(quick_args, run_dir, capsys, monkeypatch):
    """jsonargparse imports what a class path names to build it: a module's import-time code ran before the check
    (a module on PYTHONPATH, a package's __main__, which runs its program: flask.__main__ imported ./app.py)."""
    marker, modules = run_dir / "ran", run_dir / "modules"
    plant_module(modules, "evilcb", marker)
    plant_module(modules, "evilpkg.__main__", marker)
    monkeypatch.syspath_prepend(str(modules))
    error = cli_error(["fit", *quick_args, "--trainer.callbacks+=evilcb.Evil"], capsys, root=run_dir)
    assert "evilcb.Evil is not a class a config may name" in error and "--trust your.module" in error
    (run_dir / "main.yaml").write_text("trainer:\n  callbacks:\n    - class_path: evilpkg.__main__.Evil\n")
    for trusting in ([], ["--trust=evilpkg"]):  # a trusted package's __main__ is a program all the same
        error = cli_error(["fit", *quick_args, *trusting, "--config=main.yaml"], capsys, root=run_dir)
        assert "evilpkg.__main__.Evil is in a __main__ module" in error
    hook = ["--trainer.callbacks+=LambdaCallback", "--trainer.callbacks.on_fit_start=evilcb.Evil"]
    assert "evilcb.Evil is code" in cli_error(["fit", *quick_args, *hook], capsys, root=run_dir)
    assert not marker.exists(), marker.read_text()
    assert "torch.utils.model_dump.__main__" in library_main_modules()  # torch's own programs: refused by name
    error = cli_error(["fit", *quick_args, "--trainer.callbacks+=torch.utils.model_dump.__main__.X"], capsys)
    assert "is in a __main__ module" in error


def test_a_module_trusted_by_a_spec_is_refused_only_the_command_line_trusts(fake_data_dir, run_dir, capsys):
    marker = run_dir / "ran"
    plant_module(run_dir, "evilmod", marker)
    base = {"configs": ["debug"], "options": {"data.data_dir": str(fake_data_dir), "data.split.val_size": 100}}
    lr = {"model.optimizer.init_args.lr": {"low": 1.0e-3, "high": 1.0e-2}}
    for spec in (
        {**base, "options": {**base["options"], "trust": "evilmod"}, "space": lr},
        {**base, "options": {**base["options"], "--trust": "evilmod"}, "space": lr},
        {**base, "space": {**lr, "trust": {"choices": ["evilmod"]}}},
    ):
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
        with pytest.raises(SystemExit) as caught:
            sweep_main(["spec.yaml"])
        assert caught.value.code == 2 and "only the command line trusts a module" in capsys.readouterr().err
    assert not marker.exists() and not (run_dir / "logs").exists()


class CreatesMarker:
    """A callable object (no function): calling it creates ``path``, as ``ctypes.pythonapi.fork`` would fork."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, *args: object) -> float:
        self.path.touch()
        return 1.0


def test_a_callable_object_is_code_though_it_is_no_function(quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    for value in (CreatesMarker(marker), operator.itemgetter(0), np.add, builtins.exit):
        config = Namespace(model=Namespace(lr_scheduler=Namespace(init_args=Namespace(lr_lambda=value))))
        with pytest.raises(UserInputError, match=r"model.lr_scheduler.init_args.lr_lambda: .* is code"):
            refuse_untrusted_code(config)
    refuse_untrusted_code(Namespace(data_dir=ParsedPath(str(run_dir), mode="dr")))  # a path the parser read is data
    scheduler = ["--model.lr_scheduler=torch.optim.lr_scheduler.LambdaLR"]
    for function in ("builtins.exit", "torch.exp"):  # exit (a Quitter object) ended the run with status 0
        error = cli_error(["fit", *quick_args, *scheduler, f"--model.lr_scheduler.lr_lambda={function}"], capsys)
        assert "lr_lambda: " in error and "is code, and a config names code only from modules you trust" in error
    assert not marker.exists()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH is Python 3.11's (3.10 ignores it)")
def test_interpreters_a_run_starts_never_import_from_the_current_folder(tmp_path):
    """ddp_spawn's processes (and DataLoader workers with spawn) start with `python -c`, the current folder first."""
    folder, marker = tmp_path / "received_run", tmp_path / "ran"
    (folder / "multiprocessing").mkdir(parents=True)
    (folder / "multiprocessing" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('child')\n")
    child = (  # as `python -m project` imports the package (sys.argv[0] is "-m" then), and a spawned child
        "import sys; sys.argv[0] = '-m'; import project; import multiprocessing, os\n"
        "process = multiprocessing.get_context('spawn').Process(target=os.getpid); process.start(); process.join()\n"
    )
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]  # "" is the cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("PYTHONSAFEPATH", None)
    result = subprocess.run([sys.executable, "-c", child], cwd=folder, env=env, capture_output=True, timeout=120)
    assert not marker.exists(), result.stderr[-2000:]
    assert result.returncode == 0, result.stderr[-2000:]


def test_yaml_aliases_that_stand_for_too_much_text_are_refused(fake_data_dir, run_dir, capsys):
    """1,200 aliases of a 10 KB string: 13 KB of YAML standing for 12 MB of text, past the 10 M characters read."""
    weights = f'[&a "{"x" * 10_000}"{", *a" * 1200}]'
    text = f"model: {{task: {{class_path: Multiclass, init_args: {{class_weights: {weights}}}}}}}\n"
    (run_dir / "wide.yaml").write_text(text)
    message = "aliases (*name) expand to more than 10,000,000 characters"
    assert message in cli_error(["fit", f"--data.data_dir={fake_data_dir}", "--config=wide.yaml"], capsys)
    inline = ["--model.task=Multiclass", f"--model.task.class_weights={weights}"]
    assert message in cli_error(["fit", f"--data.data_dir={fake_data_dir}", *inline], capsys)
    assert not (run_dir / "logs").exists()


@pytest.mark.parametrize(
    "sampler, pruner, message",
    [
        ({"name": "tpe", "n_startup_trials": 0, "gamma": "x"}, "median", "tpe's gamma takes a function"),
        ({"name": "tpe", "n_ei_candidates": "x"}, "median", "tpe's n_ei_candidates must be int, got 'x'"),
        ("tpe", {"name": "percentile", "percentile": "x"}, "percentile's percentile must be float, got 'x'"),
    ],
)
def test_sampler_and_pruner_arguments_of_another_type_are_refused_before_any_folder(
    sampler, pruner, message, fake_data_dir, run_dir, capsys
):
    spec = {
        "configs": ["debug"],
        "options": {"data.data_dir": str(fake_data_dir), "data.split.val_size": 100, "trainer.max_epochs": 1},
        "space": {"model.optimizer.init_args.lr": {"low": 1.0e-3, "high": 1.0e-2}},
        "trials": 2,
        "sampler": sampler,
        "pruner": pruner,
    }
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as caught:
        sweep_main(["spec.yaml"])
    assert caught.value.code == 2 and message in capsys.readouterr().err
    assert not (run_dir / "logs").exists()
