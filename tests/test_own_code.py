"""Your own code, trusted because you named it (project.trusted): a network outside ``project/`` trains, resumes,
fine-tunes, evaluates, exports and predicts; a checkpoint alone never makes it import. What an older release wrote is
refused in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_error, run_script

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
    finetune = [
        *small,
        f"--model.finetuning.pretrained={own_network_run}",
        "--data.labels.positive_classes=[5,6,7,8,9]",
    ]
    cli = run_cli(["fit", *quick_args, config, *finetune, "--trainer.max_epochs=1"])
    assert cli.model.task.name == "binary" and cli.model.pretrained_summary.startswith("Loaded")


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
    assert (tmp_path / "c" / "config.json").is_file()


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
    evaluated = python(str(REPO_ROOT / "scripts" / "evaluate.py"), "last.ckpt", "--data.data_dir", str(fake_data_dir),
                       "--out", str(tmp_path / "report"), cwd=download)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert not (tmp_path / "ran").exists()


def test_a_config_of_0_1_is_one_line_and_a_checkpoint_of_another_version_names_the_release_that_reads_it(
    quick_args, fake_data_dir, run_dir, capsys, monkeypatch
):
    """No code keeps the template's older names: a run config written by the code of 2026-12-01 (commit acc2819,
    old module names and flat options) and a checkpoint without the option layout of 0.2 are one line each."""
    old_config = [f"--config={BEFORE_THE_MOVE / 'config.yaml'}", f"--data.data_dir={fake_data_dir}"]
    error = cli_error(["fit", *old_config], capsys)
    assert error.startswith("error: trainer.logger: project.tensorboard_reports.RunLogger cannot be used here")
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    (last,) = run_dir.glob("logs/*/version_0/checkpoints/last.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    del checkpoint["project_version"]
    torch.save(checkpoint, run_dir / "old.ckpt")
    expected = "old.ckpt was written by project 0.1 (before the pieces of 0.2), whose options this one does not read"
    assert expected in cli_error(["test", *quick_args, f"--ckpt_path={run_dir / 'old.ckpt'}"], capsys)
    code, _, err = run_script("evaluate.py", [str(run_dir / "old.ckpt")], capsys, monkeypatch)
    assert code == 2 and expected in err and "git checkout" in err
    checkpoint["project_version"] = "9.9"
    torch.save(checkpoint, run_dir / "newer.ckpt")
    error = cli_error(["test", *quick_args, f"--ckpt_path={run_dir / 'newer.ckpt'}"], capsys)
    assert "written by project 9.9, whose options this one does not read" in error and "(9.9, which this one" in error


@pytest.mark.slow
def test_a_run_resumes_when_its_network_is_named_by_another_path_of_the_same_class(quick_args, run_dir):
    """The module's own path and the package's re-export: one class, one run."""
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
