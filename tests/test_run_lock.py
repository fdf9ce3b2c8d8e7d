"""A live run is never touched twice: a run folder in use is locked, ``--ckpt_path last`` says which run it took,
``validate`` and ``test`` pass over runs still training, a lock left by a killed process is taken over, and two
runs starting together get folders of their own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_error
from test_reliability import SUBPROCESS_ENV

from project.cli import run_cli
from project.errors import UserInputError
from project.training.run_lock import LOCK_FILE, RunInUseError, RunLock, live_holder
from project.training.runs import claim_new_run


def start_waiting_run(folder: Path, args: list[str], step: int) -> tuple[subprocess.Popen, Path]:
    """``python -m project fit ARGS`` in another process, stopped after ``step`` optimizer steps until the test
    creates the file it returns (a run that is still training)."""
    ready, go = folder / f"ready-{step}", folder / f"go-{step}"
    wait = ["--trust=helpers", "--trainer.callbacks+=helpers.WaitAtStep", f"--trainer.callbacks.step={step}",
            f"--trainer.callbacks.ready={ready}", f"--trainer.callbacks.go={go}"]  # fmt: skip
    command = [sys.executable, "-m", "project", "fit", *args, *wait, "--test_after_fit=false"]
    process = subprocess.Popen(
        command, cwd=folder, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the run did not reach step {step}: {process.communicate()[0][-3000:]}")
        time.sleep(0.1)
    return process, go


@pytest.mark.slow
def test_a_second_start_on_a_live_run_is_refused_naming_the_process_and_validate_passes_over_it(
    quick_args, run_dir, capsys
):
    for _ in range(2):  # version_0 and version_1, one epoch each
        run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    live = Path("logs") / "mnist" / "version_1"
    last = live / "checkpoints" / "last.ckpt"
    first, go = start_waiting_run(run_dir, [*quick_args, "--ckpt_path=last", "--trainer.max_epochs=3"], step=12)
    try:
        saved = last.read_bytes()
        assert f"process {first.pid} on {socket.gethostname()}" in live_holder(live)
        for ckpt_path in ("last", str(last), "auto"):
            message = cli_error(["fit", *quick_args, f"--ckpt_path={ckpt_path}", "--trainer.max_epochs=3"], capsys)
            assert f"{live} is in use: process {first.pid} on {socket.gethostname()}" in message
            assert "wait for it to end, or stop it and resume then" in message
        assert last.read_bytes() == saved  # untouched by the refused starts
        run_cli(["validate", *quick_args, "--ckpt_path=last"])
        out = capsys.readouterr().out
        assert f"--ckpt_path last: passed over {live}, which process {first.pid}" in out
        assert f"--ckpt_path last: {Path('logs') / 'mnist' / 'version_0' / 'checkpoints' / 'last.ckpt'} (epoch 1" in out
        new = run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
        assert Path(new.trainer.log_dir).name == "version_2"  # a new run: a folder of its own
    finally:
        go.touch()
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output[-3000:]
    assert not (live / LOCK_FILE).exists()  # removed when the run ended
    assert f"Resuming {last} (epoch 1, step 10) into {live}" in output  # it said which run it took


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_is_taken_over(quick_args, run_dir):
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    run = Path("logs") / "mnist" / "version_0"
    killed, _ = start_waiting_run(run_dir, [*quick_args, "--ckpt_path=last", "--trainer.max_epochs=2"], step=12)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert (run / LOCK_FILE).is_file() and str(killed.pid) in (run / LOCK_FILE).read_text()  # left behind
    assert live_holder(run) is None  # but nobody holds it
    resumed = run_cli(["fit", *quick_args, "--ckpt_path=last", "--trainer.max_epochs=2", "--test_after_fit=false"])
    assert resumed.trainer.global_step == 20 and Path(resumed.trainer.log_dir).resolve() == run.resolve()
    assert not (run / LOCK_FILE).exists()


def test_a_folder_held_by_this_very_process_is_refused_to_a_second_lock(tmp_path):
    first = RunLock(tmp_path / "version_0")
    first.acquire()
    with pytest.raises(RunInUseError, match=rf"version_0 is in use: process {os.getpid()} on "):
        RunLock(tmp_path / "version_0").acquire()
    first.release()
    assert not (tmp_path / "version_0").exists()  # the run wrote nothing: its folder goes with the lock
    second = RunLock(tmp_path / "version_0")
    second.acquire()
    (tmp_path / "version_0" / "events").touch()
    second.release()
    assert sorted(path.name for path in (tmp_path / "version_0").iterdir()) == ["events"]


def test_new_runs_take_the_first_version_past_the_highest_and_never_one_made_meanwhile(tmp_path):
    (tmp_path / "version_0").mkdir(parents=True)
    (tmp_path / "version_3").mkdir()
    assert claim_new_run(tmp_path) == 4
    assert claim_new_run(tmp_path) == 5  # version_4 exists now: the next start takes another
    assert claim_new_run(tmp_path / "new") == 0


def test_a_refused_start_leaves_no_run_folder_behind(quick_args, run_dir, capsys):
    """The run folder is made and locked as the last step before training: bad input found earlier writes none."""
    cli_error(["fit", *quick_args, "--data.batch_size=0"], capsys, root=run_dir)
    assert not (run_dir / "logs").exists()


def test_a_new_run_never_takes_a_folder_made_after_it_looked(tmp_path, monkeypatch):
    (tmp_path / "version_0").mkdir()
    monkeypatch.setattr(Path, "iterdir", lambda self: iter([]))  # it looked before version_0 was made
    assert claim_new_run(tmp_path) == 1


def test_a_start_refused_once_its_new_folder_is_made_leaves_no_folder_behind(quick_args, run_dir, capsys, monkeypatch):
    def refuse(self):
        raise RunInUseError("refused for the test")

    monkeypatch.setattr(RunLock, "acquire", refuse)
    assert cli_error(["fit", *quick_args], capsys).endswith("refused for the test")
    assert list((run_dir / "logs").glob("*/version_*")) == []


def write_lock(folder: Path, **info: object) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"started": "earlier", "command": "python -m project fit", **info}))


def test_without_flock_the_lock_file_decides(tmp_path, monkeypatch):
    """On a filesystem without flock: a live process on this host holds the folder; a dead one's file, or one an
    earlier start of this SLURM job left on another host, is taken over; another host's is refused."""
    import project.training.run_lock as run_lock

    monkeypatch.setattr(run_lock, "try_flock", lambda descriptor, exclusive: None)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    cases = {
        "live": ({"host": host, "pid": os.getppid()}, False),
        "dead": ({"host": host, "pid": int(ended.stdout)}, True),
        "other host": ({"host": "elsewhere", "pid": 1}, False),
        "same job": ({"host": "elsewhere", "pid": 1, "slurm_job_id": "77"}, True),
    }
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    for name, (info, taken) in cases.items():
        write_lock(tmp_path / name, **info)
        lock = RunLock(tmp_path / name)
        if taken:
            lock.acquire()
            assert f'"pid": {os.getpid()}' in (tmp_path / name / LOCK_FILE).read_text(), name
            lock.release()
        else:
            with pytest.raises(RunInUseError, match=f"is in use: process {info['pid']} on {info['host']}"):
                lock.acquire()


def test_the_lock_file_records_the_command_without_its_options(tmp_path, monkeypatch):
    from project.training.run_lock import holder_info

    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "project", "fit", "--trainer.logger.init_args.api_key",
                                           "secret"])  # fmt: skip
    assert holder_info()["command"] == "python -m project fit"


def test_a_run_lock_never_writes_through_a_link(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).symlink_to(target)
    with pytest.raises(UserInputError, match=r"run\.lock cannot be opened"):
        RunLock(tmp_path / "run").acquire()
    assert target.read_text() == "keep me"


@pytest.mark.slow
def test_fit_from_best_resumes_into_a_new_run_and_leaves_the_newer_last_checkpoint(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--test_after_fit=false"])
    last = Path("logs") / "mnist" / "version_0" / "checkpoints" / "last.ckpt"
    saved = last.read_bytes()
    resumed = run_cli(["fit", *quick_args, "--ckpt_path=best", "--trainer.max_epochs=3", "--test_after_fit=false"])
    assert Path(resumed.trainer.log_dir).name == "version_1" and last.read_bytes() == saved
    assert "an older state than logs/mnist/version_0's last.ckpt, resumed into a new run" in capsys.readouterr().out
