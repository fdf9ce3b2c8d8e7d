"""Your own code, trusted because you named it (project.trusted), and code written before the package took folders
(project.moved): a network outside ``project/`` trains, resumes, fine-tunes, evaluates, exports and predicts; a
checkpoint alone never makes it import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_script

from project.cli import run_cli
from project.errors import UserInputError
from project.networks import Network
from project.training.checkpoints import allowed_class
from project.trusted import trust, trust_declared

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "own_network"
BEFORE_THE_MOVE = Path(__file__).parent / "data" / "written_before_the_move"


@pytest.fixture
def own_network_run(quick_args, run_dir, monkeypatch) -> Path:
    """``last.ckpt`` of the own-network example trained through the CLI (as ``python -m project`` from the clone)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    small = ["--model.network.init_args.width=8", "--model.network.init_args.blocks=1", "--test_after_fit=false"]
    trust = "--trust=examples.own_network.resnet"
    run_cli(["fit", trust, *quick_args, f"--config={EXAMPLE / 'config.yaml'}", *small, "--trainer.max_epochs=1"])
    return run_dir / "logs" / "own_network" / "version_0" / "checkpoints" / "last.ckpt"


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_an_own_network_trains_resumes_and_fine_tunes_from_its_checkpoint(own_network_run, quick_args, run_dir):
    checkpoint = torch.load(own_network_run, weights_only=True)
    assert checkpoint["hyper_parameters"]["network"]["class_path"] == "examples.own_network.resnet.SmallResNet"
    small = ["--model.network.init_args.width=8", "--model.network.init_args.blocks=1", "--test_after_fit=false"]
    config = f"--config={EXAMPLE / 'config.yaml'}"
    run_cli(["fit", *quick_args, config, *small, "--trainer.max_epochs=2", "--ckpt_path=last"])
    resumed = torch.load(own_network_run, weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] > checkpoint["global_step"]
    finetune = [*small, f"--model.pretrained={own_network_run}", "--data.labels.positive_classes=[5,6,7,8,9]"]
    cli = run_cli(["fit", *quick_args, config, *finetune, "--trainer.max_epochs=1"])
    assert cli.model.task.name == "binary" and cli.model.pretrained_loaded


@pytest.mark.slow
def test_scripts_take_an_own_network_that_the_user_names_and_refuse_it_otherwise(own_network_run, tmp_path):
    refused = python("scripts/evaluate.py", str(own_network_run), "--out", str(tmp_path / "a"), cwd=REPO_ROOT)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: the checkpoint names the network examples.own_network.resnet.SmallResNet")
    assert "--trust your.module" in refused.stderr and "[tool.project]" in refused.stderr
    trust = ["--trust", "examples.own_network.resnet"]
    evaluated = python("scripts/evaluate.py", str(own_network_run), *trust, "--out", str(tmp_path / "b"), cwd=REPO_ROOT)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["count"] == 200
    exported = python("scripts/export.py", str(own_network_run), *trust, "--out", str(tmp_path / "c"), cwd=REPO_ROOT)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "c" / "model.json").is_file()


def test_a_module_listed_in_the_clones_pyproject_is_trusted_and_a_broken_one_is_one_error(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(EXAMPLE / "resnet.py", clone / "my_listed_nets.py")
    (clone / "pyproject.toml").write_text('[tool.project]\ntrusted = ["my_listed_nets"]\n')
    with pytest.raises(UserInputError, match="not allowed here"):
        allowed_class("my_listed_nets.SmallResNet", Network, "network")
    assert trust_declared(clone) == ["my_listed_nets"]
    assert allowed_class("my_listed_nets.SmallResNet", Network, "network").__name__ == "SmallResNet"
    assert str(clone) not in sys.path  # on the path only while the modules named were imported
    (clone / "pyproject.toml").write_text('[tool.project]\ntrusted = ["no_such_module"]\n')
    with pytest.raises(UserInputError, match=r"^cannot import the trusted module 'no_such_module' from "):
        trust_declared(clone)
    (clone / "broken.py").write_text("def oops(:\n")
    with pytest.raises(UserInputError, match=r"'broken' .*SyntaxError"):
        trust("broken", root=clone)


def test_a_pyproject_beside_a_downloaded_run_names_no_code_to_import(pretrained_checkpoint, fake_data_dir, tmp_path):
    """Only the clone's own pyproject.toml is read: one in the folder a command runs in (a downloaded run's, say), or
    above it, is not."""
    download = tmp_path / "download" / "run"
    download.mkdir(parents=True)
    shutil.copy(pretrained_checkpoint, download / "last.ckpt")
    (download.parent / "pyproject.toml").write_text('[tool.project]\ntrusted = ["evil"]\n')
    (download / "pyproject.toml").write_text('[tool.project]\ntrusted = ["evil"]\n')
    for folder in (download, download.parent):
        (folder / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
    evaluated = python(str(REPO_ROOT / "scripts" / "evaluate.py"), "last.ckpt", "--data-dir", str(fake_data_dir),
                       "--out", str(tmp_path / "report"), cwd=download)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert not (tmp_path / "ran").exists()


def test_a_run_config_and_class_paths_from_before_the_package_took_folders_still_work(
    fake_data_dir, run_dir, capsys, monkeypatch
):
    """The run config written by the code of 2026-12-01 (commit acc2819) names project.tensorboard_reports.RunLogger,
    project.checkpoints.LastCheckpoint, project.resume.ExactResume ...: it trains, resumes and is evaluated; a
    checkpoint naming a network by its old module (project.library_networks) finds the class. (Its data options are
    in today's spelling, ``data.split`` ...: options renamed since are not kept, only module paths.)"""
    args = [f"--config={BEFORE_THE_MOVE / 'config.yaml'}", f"--data.data_dir={fake_data_dir}", "--test_after_fit=false"]
    run_cli(["fit", *args])  # max_steps 2, as the old run had
    (checkpoint,) = run_dir.glob("logs/*/version_0/checkpoints/last.ckpt")
    resume = [f"--ckpt_path={checkpoint}", "--trainer.max_epochs=2", "--trainer.max_steps=4"]
    cli = run_cli(["fit", *args, *resume])
    assert cli.trainer.global_step == 4  # resumed at step 2
    assert type(cli.trainer.logger).__module__ == "project.reports.tensorboard"
    code, _, err = run_script("evaluate.py", [str(checkpoint), "--out", str(run_dir / "report")], capsys, monkeypatch)
    assert code == 0, err

    import project.task_module  # an old module name is the module's new home itself

    from project.networks import LibraryNetwork
    from project.training import TaskModule

    assert project.task_module.TaskModule is TaskModule
    assert allowed_class("project.library_networks.LibraryNetwork", Network, "network") is LibraryNetwork


def test_a_run_resumes_when_its_network_is_named_by_another_path_of_the_same_class(quick_args, run_dir):
    """The module's own path, the package's re-export, a path from before the move: one class, one run."""
    short = ["--trainer.max_epochs=1", "--test_after_fit=false", "--model.network.init_args.width=4"]
    run_cli(["fit", *quick_args, "--model.network=project.networks.convnet.ConvNet", *short])
    cli = run_cli(["fit", *quick_args, *short[1:], "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert cli.trainer.current_epoch == 2 and type(cli.model.network).__name__ == "ConvNet"


def test_a_network_that_does_not_keep_the_contract_is_refused_naming_what_it_lacks():
    from functools import partial

    from torch import nn

    from project.training import TaskModule

    class Unfinished(Network):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Linear(784, 10)

    with pytest.raises(UserInputError, match=r"does not keep the Network contract: .* backbone, head, config"):
        TaskModule(Unfinished(), optimizer=partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(UserInputError, match=r"must be a project\.networks\.Network, got a Linear"):
        TaskModule(nn.Linear(784, 10), optimizer=partial(torch.optim.SGD, lr=0.1))
