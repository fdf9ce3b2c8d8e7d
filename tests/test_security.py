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
from project.errors import UserInputError

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


def best_checkpoint_state(checkpoint: dict) -> dict:
    return next(state for name, state in checkpoint["callbacks"].items() if name.startswith("BestCheckpoint"))


def test_a_checkpoint_naming_a_file_outside_its_folder_deletes_nothing(trained_checkpoint, quick_args, run_dir, capsys):
    """Lightning's ModelCheckpoint deletes the old best files its state names when it saves a better one, and checks
    that they lie in its folder with Path.absolute(), which keeps `..`."""
    victim = run_dir / "victim.txt"
    victim.write_text("keep me")
    escape = "logs/mnist/version_0/checkpoints/../../../../victim.txt"

    def name_the_victim(checkpoint):
        state = best_checkpoint_state(checkpoint)
        state.update(best_model_path=escape, kth_best_model_path=escape, best_k_models={escape: torch.tensor(-1.0)})
        state.update(best_model_score=torch.tensor(-1.0), kth_value=torch.tensor(-1.0))

    (run_dir / "downloads").mkdir()
    evil = with_changes(trained_checkpoint, run_dir / "downloads" / "evil.ckpt", name_the_victim)
    resume = ["fit", *quick_args, "--trainer.max_epochs=2", "--test_after_fit=false"]
    error = cli_error([*resume, f"--ckpt_path={evil}"], capsys)
    assert "victim.txt, which leads out of its checkpoint folder" in error and victim.exists()
    with_changes(trained_checkpoint, trained_checkpoint, name_the_victim)  # the same state in a run folder
    assert "leads out of its checkpoint folder" in cli_error([*resume, "--ckpt_path=last"], capsys)
    assert victim.read_text() == "keep me"


def test_a_checkpoint_from_elsewhere_is_resumed_into_a_new_run_not_the_one_its_state_names(
    trained_checkpoint, quick_args, run_dir
):
    run = trained_checkpoint.parents[1]
    before = {path: path.stat().st_mtime_ns for path in run.rglob("*")}
    (run_dir / "downloads").mkdir()
    received = with_changes(trained_checkpoint, run_dir / "downloads" / "last.ckpt", lambda checkpoint: None)
    cli = run_cli(["fit", *quick_args, f"--ckpt_path={received}", "--trainer.max_epochs=2", "--test_after_fit=false"])
    assert Path(cli.trainer.log_dir).name == "version_1" and cli.trainer.current_epoch == 2
    assert {path: path.stat().st_mtime_ns for path in run.rglob("*")} == before


def test_evaluate_never_downloads_nor_writes_where_a_checkpoint_names(
    trained_checkpoint, tmp_path, capsys, monkeypatch
):
    elsewhere, cache = tmp_path / "elsewhere", tmp_path / "elsewhere_cache"

    def point_elsewhere(checkpoint):
        hparams = checkpoint["datamodule_hyper_parameters"]
        hparams.update(data_dir=str(elsewhere), download=True, cache_dir=str(cache))

    evil = with_changes(trained_checkpoint, tmp_path / "evil.ckpt", point_elsewhere)
    code, _, err = run_script("evaluate.py", [str(evil), "--out", str(tmp_path / "report")], capsys, monkeypatch)
    assert code == 2 and "evaluate never downloads: give --data.data_dir DIR" in err, err
    assert not elsewhere.exists() and not cache.exists() and not (tmp_path / "report").exists()


def test_a_library_network_rebuilt_from_a_checkpoint_never_reaches_the_hugging_face_hub(
    pretrained_checkpoint, monkeypatch
):
    pytest.importorskip("transformers")
    import socket

    from project.training.task_module import TaskModule

    checkpoint = torch.load(pretrained_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["network"] = {
        "class_path": "project.networks.library.LibraryNetwork",
        "init_args": {"library": "huggingface", "name": "someone/vit-tiny", "num_outputs": 10, "in_channels": 1},
    }
    reached = []

    def record(*args, **kwargs):
        reached.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", record)
    monkeypatch.setattr(socket, "create_connection", record)
    with pytest.raises(UserInputError, match="reads only the local cache"):
        TaskModule.from_checkpoint(checkpoint, "received.ckpt")
    assert reached == []


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


STATES = {
    "an augmentation generator of 3 bytes": (
        lambda checkpoint: checkpoint["MNISTDataModule"].update(augment_generator=torch.zeros(3, dtype=torch.uint8)),
        "augment_generator is not a generator state",
    ),
    "a python random state that is text": (
        lambda checkpoint: checkpoint["callbacks"]["ExactResume"]["ranks"][0].update(python="x"),
        "ExactResume's random state of process 0 is not one",
    ),
    "task options nested 3000 deep": (
        lambda checkpoint: checkpoint["hyper_parameters"]["task"]["init_args"].update(metrics=nested(3000)),
        "hyper_parameters nest deeper than 64 levels",
    ),
}


@pytest.mark.parametrize("crafted", list(STATES))
def test_states_a_resumed_run_puts_back_are_checked_before_it_starts(
    crafted, trained_checkpoint, quick_args, tmp_path, capsys, monkeypatch
):
    change, message = STATES[crafted]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # pickling a deeply nested value recurses (torch.load reads it without)
    try:
        evil = with_changes(trained_checkpoint, tmp_path / "evil.ckpt", change)
    finally:
        sys.setrecursionlimit(limit)
    error = cli_error(["fit", *quick_args, f"--ckpt_path={evil}", "--trainer.max_epochs=2"], capsys)
    assert message in error


@pytest.mark.parametrize(
    "preprocessing, message",
    [("x", "is str, not a mapping"), ("image_size", "has image_size 1000000, not a whole number from 1 to 4096")],
)
def test_predict_refuses_a_preprocessing_record_training_never_writes(
    preprocessing, message, pretrained_checkpoint, tmp_path, capsys, monkeypatch
):
    def craft(checkpoint):
        if preprocessing == "x":
            checkpoint["preprocessing"] = "x"
        else:
            checkpoint["preprocessing"]["image_size"] = 10**6

    evil = with_changes(pretrained_checkpoint, tmp_path / "evil.ckpt", craft)
    (tmp_path / "digit.png").write_bytes(b"")
    out = tmp_path / "predictions.csv"
    args = [str(evil), str(tmp_path / "digit.png"), "--out", str(out)]
    code, _, err = run_script("predict.py", args, capsys, monkeypatch)
    assert code == 2 and message in err and "Traceback" not in err and not out.exists(), err


def test_a_csv_header_beyond_the_csv_modules_field_limit_is_one_line(run_dir, capsys):
    data_dir = run_dir / "labels"
    data_dir.mkdir()
    (data_dir / "train.csv").write_text(f"image,{'c' * 140_000}\nx.png,1\n")
    args = ["fit", "--data=project.data.CSVMultilabelDataModule", f"--data.data_dir={data_dir}"]
    assert "train.csv line 1: not a CSV file this can read (field larger than field limit" in cli_error(args, capsys)
