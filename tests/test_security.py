"""Files are data, never code: a checkpoint, a saved config or a CSV never picks a class or function to run.

Each test plants a payload that would create a marker file if it ran, and asserts the file does not exist.
"""

from __future__ import annotations

import ast
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_error, run_script

from project.cli import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
EVALUATE = REPO_ROOT / "scripts" / "evaluate.py"


class CreatesFile:
    """Unpickling this opens (creates) ``path``: what a malicious pickled checkpoint would do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.fixture
def trained_checkpoint(quick_args, run_dir) -> Path:
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    return run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"


def with_changes(source: Path, target: Path, change) -> Path:
    """A copy of the checkpoint ``source`` with ``change(checkpoint)`` applied: still plain values only."""
    checkpoint = torch.load(source, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, target)
    torch.load(target, weights_only=True)  # the payload is plain data: weights_only=True loads it
    return target


def test_evaluate_refuses_a_data_module_class_outside_the_allow_list(trained_checkpoint, tmp_path):
    marker = tmp_path / "ran"

    def name_a_function(checkpoint):
        checkpoint["datamodule_hyper_parameters"] = {"_class_path": "subprocess.run", "args": ["touch", str(marker)]}

    evil = with_changes(trained_checkpoint, tmp_path / "evil.ckpt", name_a_function)
    result = subprocess.run([sys.executable, str(EVALUATE), str(evil)], capture_output=True, text=True, timeout=300)
    assert not marker.exists()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "error: the checkpoint names the data module subprocess.run" in result.stderr
    assert "project.data.MNISTDataModule" in result.stderr  # what is allowed


def test_loading_a_model_refuses_a_network_class_outside_the_allow_list(trained_checkpoint, tmp_path, monkeypatch):
    from project.errors import UserInputError
    from project.training.task_module import TaskModule

    marker = tmp_path / "imported"
    (tmp_path / "payload_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "import torch\nclass Evil(torch.nn.Module):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def name_another_network(checkpoint):
        checkpoint["hyper_parameters"]["network"]["class_path"] = "payload_module.Evil"

    evil = with_changes(trained_checkpoint, tmp_path / "evil.ckpt", name_another_network)
    with pytest.raises(UserInputError, match=r"names the network payload_module\.Evil.*project\.networks\.ConvNet"):
        TaskModule.load_from_checkpoint(evil)
    assert not marker.exists()  # not even imported


def test_loading_a_model_refuses_an_instantiator_named_by_the_checkpoint(trained_checkpoint, tmp_path):
    from project.errors import UserInputError
    from project.training.task_module import TaskModule

    def name_a_function(checkpoint):
        checkpoint["hyper_parameters"]["_instantiator"] = "builtins.exec"

    evil = with_changes(trained_checkpoint, tmp_path / "evil.ckpt", name_a_function)
    with pytest.raises(UserInputError, match=r"names the instantiator 'builtins\.exec'; only LightningCLI's is read"):
        TaskModule.load_from_checkpoint(evil)  # never used (the project builds the model), and refused as crafted
    model = TaskModule.load_from_checkpoint(trained_checkpoint)
    assert type(model.network).__name__ == "ConvNet"
    with pytest.raises(UserInputError):
        TaskModule.load_from_checkpoint(tmp_path / "missing.ckpt")


def test_a_pickled_hpc_checkpoint_is_refused_and_never_unpickled(quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "x": CreatesFile(marker)}, run_dir / "hpc_ckpt_1.ckpt")
    error = cli_error(["fit", *quick_args, "--ckpt_path=hpc"], capsys, root=run_dir)
    assert "hpc_ckpt_1.ckpt is not a readable checkpoint" in error
    assert not marker.exists()


def test_the_weights_only_switch_is_not_an_option(quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "x": CreatesFile(marker)}, run_dir / "hpc_ckpt_1.ckpt")
    error = cli_error(["fit", *quick_args, "--ckpt_path=hpc", "--weights_only=false"], capsys, root=run_dir)
    assert "weights_only" in error
    assert not marker.exists()


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test"])
def test_a_pickled_checkpoint_is_refused_under_every_subcommand(subcommand, quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    evil = run_dir / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "x": CreatesFile(marker)}, evil)
    error = cli_error([subcommand, *quick_args, f"--ckpt_path={evil}"], capsys, root=run_dir)
    assert "evil.ckpt is not a readable checkpoint" in error
    assert not marker.exists()


def test_ckpt_path_best_is_the_best_checkpoint_of_the_newest_run_read_with_the_checks(trained_checkpoint, quick_args):
    folder = trained_checkpoint.parent
    best = next(path for path in folder.glob("epoch=*.ckpt"))
    cli = run_cli(["test", *quick_args, "--ckpt_path=best"])
    assert Path(cli.trainer.ckpt_path).resolve() == best.resolve()


def test_a_pickled_best_checkpoint_is_refused(trained_checkpoint, quick_args, run_dir, capsys):
    marker = run_dir / "ran"
    best = next(trained_checkpoint.parent.glob("epoch=*.ckpt"))
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 1, "x": CreatesFile(marker)}, best)
    error = cli_error(["test", *quick_args, "--ckpt_path=best"], capsys)
    assert "is not a readable checkpoint" in error
    assert not marker.exists()


def test_ckpt_path_registry_is_refused_with_the_reason(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--ckpt_path=registry"], capsys, root=run_dir)
    assert "registry" in error and "pass the path of a checkpoint file" in error


def test_load_from_checkpoint_reads_a_pickled_checkpoint_never(tmp_path):
    from project.errors import UserInputError
    from project.training.task_module import TaskModule

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    with evil.open("wb") as file:
        pickle.dump({"state_dict": {}, "epoch": 0, "global_step": 0, "x": CreatesFile(marker)}, file)
    with pytest.raises(UserInputError, match="is not a readable checkpoint"):
        TaskModule.load_from_checkpoint(evil)
    assert not marker.exists()


def code_cells_and_files() -> dict[str, str]:
    """Every Python source the project ships: the package, the scripts and the notebooks' code cells."""
    sources = {
        str(path): path.read_text() for folder in ("project", "scripts") for path in (REPO_ROOT / folder).rglob("*.py")
    }
    for notebook in (REPO_ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        # IPython's magics (%matplotlib inline) are not Python: left out
        sources[str(notebook)] = "\n".join(line for line in code.splitlines() if not line.startswith(("%", "!")))
    return sources


def test_every_torch_load_in_the_package_scripts_and_notebooks_uses_weights_only():
    calls = []
    for name, source in code_cells_and_files().items():
        for node in ast.walk(ast.parse(source)):
            function = node.func if isinstance(node, ast.Call) else None
            if (
                isinstance(function, ast.Attribute)
                and function.attr == "load"
                and ast.unparse(function) == "torch.load"
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                safe = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value
                calls.append((name, node.lineno, safe))
    assert calls, "expected to find the project's torch.load calls"
    assert [call for call in calls if not call[2]] == []


RECORDED_OPTIONS = {
    "an optimizer that is a string": ("optimizer", "torch.optim.SGD", "records model.optimizer as 'torch.optim.SGD'"),
    "an optimizer that is a list": ("optimizer", [1, 2], "records model.optimizer as [1, 2]"),
    "a metric naming subprocess.Popen": (
        "task",
        {"class_path": "project.tasks.Multiclass", "init_args": {"metrics": {"x": {"class_path": "subprocess.Popen"}}}},
        "class_path 'subprocess.Popen' is not allowed",
    ),
    "a task that is a string": ("task", "multiclass", "does not record its task"),
    "an unknown instantiator": ("_instantiator", "builtins.exec", "names the instantiator 'builtins.exec'"),
}


@pytest.mark.parametrize("crafted", list(RECORDED_OPTIONS))
def test_every_command_refuses_recorded_options_no_command_line_would_give(
    crafted, trained_checkpoint, quick_args, tmp_path, capsys, monkeypatch
):
    key, value, message = RECORDED_OPTIONS[crafted]

    def craft(checkpoint):
        checkpoint["hyper_parameters"][key] = value

    evil = with_changes(trained_checkpoint, tmp_path / "evil.ckpt", craft)
    for subcommand in ("test", "validate", "fit"):
        error = cli_error([subcommand, *quick_args, f"--ckpt_path={evil}", "--trainer.max_epochs=3"], capsys)
        assert error.startswith(f"error: {evil}") and message in error
    code, _, err = run_script("evaluate.py", [str(evil), "--out", str(tmp_path / "report")], capsys, monkeypatch)
    assert code == 2 and message in err and not (tmp_path / "report").exists()
