"""Launching: two "nodes" under torchrun, a SLURM job that requeues itself before its time limit, FSDP's refusal of
the CPU, and --ckpt_path auto (resume when there is something to resume)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_error, directory_scalars
from test_reliability import EXACT_CONFIG, EXACT_RUN, SUBPROCESS_ENV, assert_same_training_state

from project.cli import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
SBATCH = REPO_ROOT / "scripts" / "slurm" / "train.sbatch"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_node(rank: int, port: int, folder: Path, args: list[str]) -> subprocess.Popen:
    """One of two "nodes" on this machine: torchrun with a rendezvous on 127.0.0.1, one process per node."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    launcher += [f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}"]
    environment = {**SUBPROCESS_ENV, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*launcher, "-m", "project", "fit", *args],
        cwd=folder,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


TWO_NODES = ["--config=ddp.yaml", "--trainer.accelerator=cpu", "--trainer.num_nodes=2", "--trainer.devices=1"]


def two_nodes(folder: Path, args: list[str]) -> list[int]:
    """Both nodes' exit statuses once both have ended."""
    port = free_port()
    nodes = [torchrun_node(rank, port, folder, args) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    if any(node.returncode not in (0, 1) for node in nodes):
        raise AssertionError(outputs[0][-3000:] + outputs[1][-3000:])
    return [node.returncode for node in nodes]


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory, fake_data_dir) -> Path:
    """A 3-epoch run of ``configs_exact.yaml`` on two "nodes", uninterrupted: its working directory."""
    folder = tmp_path_factory.mktemp("two_nodes")
    args = [f"--config={EXACT_CONFIG}", *TWO_NODES, f"--data.data_dir={fake_data_dir}", "--test_after_fit=false"]
    assert two_nodes(folder, args) == [0, 0]
    return folder


@pytest.mark.slow
def test_two_nodes_under_torchrun_write_one_run_whose_validation_matches_one_process(
    two_node_run, fake_data_dir, monkeypatch
):
    assert sorted(path.name for path in (two_node_run / "logs" / "configs_exact").iterdir()) == ["version_0"]
    last = two_node_run / EXACT_RUN / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 15  # 3 epochs of 5 steps: each node had half
    two_node_accuracy = directory_scalars(two_node_run / EXACT_RUN)["val/acc"][-1][1]
    monkeypatch.chdir(two_node_run)
    args = [f"--config={EXACT_CONFIG}", f"--data.data_dir={fake_data_dir}", "--trainer.accelerator=cpu"]
    single = run_cli(["validate", *args, "--trainer.devices=1", f"--ckpt_path={last}"])
    assert single.trainer.callback_metrics["val/acc"].item() == pytest.approx(two_node_accuracy, abs=1e-6)


@pytest.mark.slow
def test_a_two_node_job_killed_mid_epoch_and_relaunched_ends_as_if_never_stopped(two_node_run, tmp_path, fake_data_dir):
    args = [f"--config={EXACT_CONFIG}", *TWO_NODES, f"--data.data_dir={fake_data_dir}", "--test_after_fit=false"]
    kill = ["--trust=helpers", "--trainer.callbacks+=helpers.KillAtStep", "--trainer.callbacks.step=13"]  # epoch 3
    assert 0 not in two_nodes(tmp_path, [*args, *kill])  # torchrun reports its worker's SIGKILL as a failure
    last = tmp_path / EXACT_RUN / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 12  # saved every 4 steps: mid-epoch
    assert two_nodes(tmp_path, [*args, "--ckpt_path=auto"]) == [0, 0]
    assert_same_training_state(two_node_run / EXACT_RUN / "checkpoints" / "last.ckpt", last)


def slurm_environment(folder: Path) -> dict[str, str]:
    """What SLURM sets for a one-task job, with stand-ins for srun (runs the command) and scontrol (notes its
    arguments in scontrol.log)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == -* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {folder}/scontrol.log\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "project-train", "SLURM_NODELIST": "localhost"}
    slurm |= {name: "1" for name in ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NUM_NODES")}
    slurm |= {name: "0" for name in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID")}
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return {**SUBPROCESS_ENV, **slurm, "PATH": path, "PROJECT_PYTHON": sys.executable}


def sbatch(folder: Path, environment: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = ["bash", str(SBATCH), *args]
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_slurm_job_saves_before_its_time_limit_requeues_itself_and_resumes_exactly(tmp_path, fake_data_dir):
    args = [f"--config={EXACT_CONFIG}", f"--data.data_dir={fake_data_dir}", "--trainer.accelerator=cpu",
            "--test_after_fit=false"]  # fmt: skip
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    for folder in (straight, requeued):
        folder.mkdir()
    result = sbatch(straight, slurm_environment(straight), *args)
    assert result.returncode == 0 and not (straight / "scontrol.log").exists(), result.stderr[-3000:]
    warning = ["--trust=helpers", "--trainer.callbacks+=helpers.SignalAtStep", "--trainer.callbacks.step=13",
               "--trainer.callbacks.signal_name=SIGUSR1"]  # fmt: skip
    first = sbatch(requeued, slurm_environment(requeued), *args, *warning)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "requeueing job 4242" in first.stdout
    assert (requeued / "scontrol.log").read_text() == "requeue 4242\n"
    job_run = Path("logs") / "project-train-4242" / "version_0"  # the job's own run (EXACT_RUN's folder, renamed)
    last = requeued / job_run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 13
    second = sbatch(requeued, slurm_environment(requeued), *args)  # what SLURM starts after the requeue
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming {job_run / 'checkpoints' / 'last.ckpt'}" in second.stdout
    assert sorted(path.name for path in (requeued / "logs" / "project-train-4242").iterdir()) == ["version_0"]
    assert_same_training_state(straight / job_run / "checkpoints" / "last.ckpt", last)


def fit_arguments_of_a_job(tmp_path: Path, job_id: str, *args: str) -> list[str]:
    """What train.sbatch passes to ``python -m project fit`` in job ``job_id`` (a stand-in interpreter records it)."""
    recorder = tmp_path / "python"
    recorder.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {tmp_path}/arguments\n')
    recorder.chmod(0o755)
    environment = {**slurm_environment(tmp_path), "SLURM_JOB_ID": job_id, "PROJECT_PYTHON": str(recorder)}
    assert sbatch(tmp_path, environment, *args).returncode == 0
    return (tmp_path / "arguments").read_text().splitlines()


def run_option(arguments: list[str]) -> str:
    """The value of the last ``--run`` in ``arguments`` (as the parser takes it: the last one wins)."""
    return [arguments[i + 1] for i, arg in enumerate(arguments) if arg == "--run"][-1]


def test_a_slurm_job_trains_its_own_run_so_a_new_job_never_resumes_another_experiment(tmp_path):
    first = fit_arguments_of_a_job(tmp_path, "101")
    assert run_option(first) == "project-train-101" and "auto" in first
    assert run_option(fit_arguments_of_a_job(tmp_path, "102")) == "project-train-102"  # a new job: a new run
    assert run_option(fit_arguments_of_a_job(tmp_path, "102", "--run", "mine")) == "mine"  # named on purpose
    log_line = next(line for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH --output="))
    assert "/" not in log_line, "SLURM cannot open a log in a folder a fresh clone lacks (logs/)"


@pytest.mark.slow
def test_ckpt_path_auto_resumes_lightnings_hpc_checkpoint_into_its_run(tmp_path, fake_data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", f"--config={EXACT_CONFIG}", f"--data.data_dir={fake_data_dir}", "--test_after_fit=false"]
    run_cli([*args, "--trainer.max_epochs=1", "--ckpt_path=auto"])  # nothing to resume: a new run
    last = tmp_path / EXACT_RUN / "checkpoints" / "last.ckpt"
    shutil.copy(last, tmp_path / "hpc_ckpt_1.ckpt")  # as Lightning's SLURM requeue names its checkpoints
    last.unlink()
    cli = run_cli([*args, "--trainer.max_epochs=2", "--ckpt_path=auto"])
    assert cli.trainer.global_step == 20
    assert sorted(path.name for path in (tmp_path / "logs" / "configs_exact").iterdir()) == ["version_0"]


def test_fsdp_on_a_machine_without_cuda_is_one_error_line(quick_args, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: FSDP runs here")
    message = cli_error(["fit", *quick_args, "--config=fsdp.yaml"], capsys)
    assert message == (
        "error: trainer.strategy FSDPStrategy shards the network across CUDA GPUs, and this machine has no CUDA GPU: "
        "use --config ddp.yaml (or no strategy) on the CPU"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP needs a CUDA GPU and this machine has none")
def test_fsdp_on_a_gpu_saves_whole_checkpoints_that_resume_and_export(quick_args, run_dir):
    from project.inference.export import export_checkpoint
    from project.networks import ConvNet

    args = ["fit", *quick_args, "--config=fsdp.yaml", "--trainer.devices=1", "--test_after_fit=false"]
    run_cli([*args, "--trainer.max_epochs=1"])
    last = run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    assert set(state) >= {f"network.{name}" for name in ConvNet().state_dict()}  # whole, not sharded
    assert run_cli([*args, "--ckpt_path=last"]).trainer.global_step == 20
    export_checkpoint(last, run_dir / "exported", ("safetensors", "pt2"))
