"""Hyperparameter sweeps (``python -m project sweep``) on generated data with a tiny network: two workers on one
study, a worker killed mid-trial and the sweep started again, pruning, the best trial's config trained again, a bad
spec refused in one line, and two workers on a PostgreSQL server the test starts."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from project.cli import run_cli
from project.sweeps import main
from project.sweeps.storage import database_url
from project.trusted import trust

trust(__name__)  # its classes are named in configs (--trainer.callbacks+=...), as a user's own module's

TESTS = Path(__file__).resolve().parent
LR = "model.optimizer.init_args.lr"
TINY = {
    "model.network.init_args.width": 4,
    "model.network.init_args.hidden_size": 16,
    "data.split.val_size": 100,
    "trainer.limit_train_batches": 4,
    "trainer.logger.init_args.log_graph": False,
}


class KillOnce(L.Callback):
    """SIGKILL this process when epoch 1 starts (epoch 0's ``last.ckpt`` written), the first time only: a worker
    killed mid-trial, whose retry then runs to the end."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1 and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


def write_spec(folder: Path, data_dir: Path, **settings: Any) -> Path:
    """A sweep spec over the learning rate on the generated data: 2 epochs of 4 steps a trial."""
    spec = {
        "configs": ["debug"],
        "options": {"data.data_dir": str(data_dir), **TINY},
        "space": {LR: {"low": 1.0e-3, "high": 3.0e-2, "log": True}},
        "trials": 3,
        "heartbeat": {"interval": 1, "grace": 3},
        **settings,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def load(name: str, storage: str | None = None) -> Any:
    import optuna

    url = database_url(storage) if storage else f"sqlite:///logs/sweeps/{name}/study.db"
    return optuna.load_study(study_name=name, storage=url)


def states(study: Any) -> list[str]:
    return [trial.state.name for trial in sorted(study.get_trials(), key=lambda trial: trial.number)]


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "project", "sweep", *args]


def subprocess_env() -> dict[str, str]:
    """This process's environment, with the tests' folder importable (the kill callback lives here)."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def session_hparams(run_folder: Path) -> dict[str, Any]:
    """The HParams row TensorBoard shows for a run folder: its first session's hyperparameters."""
    accumulator = EventAccumulator(str(run_folder))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in hparams.items()}


def assert_two_workers_ran_one_study(name: str, storage: str | None = None) -> None:
    study = load(name, storage)
    trials = study.get_trials()
    assert states(study) == ["COMPLETE"] * 3
    assert len({trial.user_attrs["worker"] for trial in trials}) == 2, [t.user_attrs["worker"] for t in trials]
    folders = [trial.user_attrs["run_folder"] for trial in trials]
    assert len(set(folders)) == 3 and len({trial.params[LR] for trial in trials}) == 3  # none twice
    sweep = Path("logs") / "sweeps" / name
    for trial, folder in zip(trials, folders, strict=True):
        run = sweep / folder
        assert folder == f"trials/trial_{trial.number:04d}/version_0"
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        hparams = session_hparams(run)
        assert hparams[f"sweep/{LR}"] == pytest.approx(trial.params[LR]) and hparams["sweep/trial"] == trial.number
        assert hparams["data/batch_size"] == 50 and hparams["network/init_args/width"] == 4
    with open(sweep / "trials.csv") as file:
        table = list(csv.DictReader(file))
    assert [row["state"] for row in table] == ["COMPLETE"] * 3 and table[0]["run_folder"] == folders[0]
    for name_ in ("best.yaml", "history.png", "importance.png", "intermediate.png"):
        assert (sweep / name_).is_file(), name_


@pytest.mark.slow
def test_two_workers_share_one_study_each_trial_in_its_own_run_folder(fake_data_dir, run_dir, capsys):
    spec = write_spec(run_dir, fake_data_dir)
    main([str(spec), "--workers", "2", "--name", "pair"])
    out = capsys.readouterr().out
    assert "trials/trial_0000/version_0" in out  # the table at the end
    lines = [line for line in out.splitlines() if "epoch 1/" in line]  # the workers' lines, through this process
    assert lines and all(re.match(r"\[trial \d\] epoch 1/", line) for line in lines), lines
    assert_two_workers_ran_one_study("pair")


@pytest.mark.parametrize("interrupted", [pytest.param(mode, marks=pytest.mark.slow) for mode in ("retry", "skip")])
def test_a_killed_sweep_continues_the_same_study(interrupted, fake_data_dir, run_dir):
    spec = write_spec(run_dir, fake_data_dir)
    kill = ["--trust=test_sweeps", "--trainer.callbacks+=test_sweeps.KillOnce"]
    kill.append(f"--trainer.callbacks.marker={run_dir / 'killed'}")
    command = sweep_command(str(spec), "--interrupted", interrupted, *kill)
    first = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert states(load("spec")) == ["RUNNING"]  # killed in epoch 1 of trial 0, after its epoch-0 last.ckpt
    time.sleep(3)  # the heartbeat's grace period (the restart's own start-up takes longer anyway)
    second = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    study = load("spec")
    trials = sorted(study.get_trials(), key=lambda trial: trial.number)
    finished = [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3  # exactly the spec's trials, across the kill
    trial_0 = Path("logs/sweeps/spec/trials/trial_0000")
    if interrupted == "retry":
        assert states(study) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
        retry = trials[1]
        assert retry.params == trials[0].params and retry.system_attrs["failed_trial"] == 0
        assert retry.user_attrs["run_folder"] == "trials/trial_0000/version_0"  # resumed into its folder
        assert "resuming interrupted trial 0 from" in second.stdout
        assert sorted(path.name for path in trial_0.iterdir()) == ["version_0"]
        assert (trial_0 / "version_0" / "config-resume1.yaml").is_file()  # the resumed start's config
        assert sorted(retry.intermediate_values) == [0, 1]  # epoch 0 inherited, epoch 1 after the resume
    else:
        assert states(study) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
        assert all("failed_trial" not in trial.system_attrs for trial in trials)
        assert {trial.user_attrs["run_folder"] for trial in trials[1:]} == {
            f"trials/trial_000{n}/version_0" for n in (1, 2, 3)
        }
    with open("logs/sweeps/spec/trials.csv") as file:
        assert [row["state"] for row in csv.DictReader(file)] == states(study)


@pytest.fixture(scope="module")
def pruned_sweep(fake_data_dir, tmp_path_factory) -> Path:
    """A sweep of 2 trials, 3 epochs each, a good learning rate and then a hopeless one (queued in this order),
    with a median pruner that prunes from the second trial's first validation on."""
    folder = tmp_path_factory.mktemp("pruned_sweep")
    spec = write_spec(
        folder,
        fake_data_dir,
        space={LR: {"low": 1.0e-7, "high": 1.0e-1, "log": True}},
        options={"data.data_dir": str(fake_data_dir), **TINY, "trainer.max_epochs": 3},
        enqueue=[{LR: 0.02}, {LR: 1.0e-7}],
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        trials=2,
    )
    previous = Path.cwd()
    os.chdir(folder)
    try:
        main([str(spec)])
    finally:
        os.chdir(previous)
    return folder


def test_a_trial_worse_than_the_median_is_pruned_before_max_epochs(pruned_sweep, monkeypatch):
    monkeypatch.chdir(pruned_sweep)
    good, hopeless = sorted(load("spec").get_trials(), key=lambda trial: trial.number)
    assert (good.state.name, hopeless.state.name) == ("COMPLETE", "PRUNED")
    assert sorted(good.intermediate_values) == [0, 1, 2] and sorted(hopeless.intermediate_values) == [0]
    last = Path("logs/sweeps/spec") / hopeless.user_attrs["run_folder"] / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0  # its run stopped after epoch 1 of 3


def test_the_best_config_trained_again_reproduces_its_trials_objective(pruned_sweep, monkeypatch):
    monkeypatch.chdir(pruned_sweep)
    best = load("spec").best_trial
    config = yaml.safe_load(Path("logs/sweeps/spec/best.yaml").read_text())
    assert "ckpt_path" not in config and "test_after_fit" not in config
    assert not {"save_dir", "name", "version"} & set(config["trainer"]["logger"]["init_args"])
    assert config["model"]["optimizer"]["init_args"]["lr"] == best.params[LR]
    cli = run_cli(["fit", "--config", "logs/sweeps/spec/best.yaml"])
    assert Path(cli.trainer.log_dir) == Path("logs/best/version_0")  # a new run of its own
    score = cli.trainer.checkpoint_callback.best_model_score.item()
    assert score == pytest.approx(best.value, abs=1e-6)
    assert "test/acc" in cli.trainer.callback_metrics  # trained, then tested


def test_a_sweep_continued_with_another_space_is_refused(pruned_sweep, fake_data_dir, monkeypatch, capsys):
    monkeypatch.chdir(pruned_sweep)
    (pruned_sweep / "changed").mkdir(exist_ok=True)
    changed = write_spec(pruned_sweep / "changed", fake_data_dir)  # the learning rate over another range
    message = sweep_error([str(changed), "--name", "spec"], capsys)
    assert "searches another space or objective" in message and "another --name" in message


def sweep_error(args: list[str], capsys) -> str:
    """Run the sweep command; expect exit status 2 and one ``error:`` line; return it."""
    with pytest.raises(SystemExit) as caught:
        main(args)
    err = capsys.readouterr().err
    assert caught.value.code == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"space": {"model.network.init_args.widht": {"choices": [4, 8]}}}, "did you mean model.network.width?"),
        ({"space": {LR: {"low": 0.1, "high": 0.01}}}, "low (0.1) is above high (0.01)"),
        ({"space": {LR: {"low": 0.0, "high": 0.1, "log": True}}}, "a log range needs low above 0"),
        ({"space": {LR: {"low": 0.01, "hihg": 0.1}}}, "did you mean 'high'?"),
        ({"space": {"data.batch_size": {"choices": [10, 20.5]}}}, "data.batch_size: expected an integer, got '20.5'"),
        ({"sampler": "tpee"}, "did you mean 'tpe'?"),
        ({"pruner": {"name": "median", "n_startup": 2}}, "did you mean 'n_startup_trials'?"),
        ({"space": {"trainer.logger.init_args.save_dir": {"choices": ["a"]}}}, "is set by the sweep"),
        ({"trails": 3}, "did you mean 'trials'?"),
        ({"configs": ["debug", "csv"], "options": {}}, "trackers beside TensorBoard (--config csv, mlflow, wandb)"),
    ],
    ids=[
        "unknown option",
        "low above high",
        "log of 0",
        "distribution key",
        "option type",
        "sampler",
        "pruner",
        "the sweep's own option",
        "spec key",
        "tracker preset",
    ],
)
def test_a_bad_spec_is_one_error_line_and_writes_no_sweep_folder(change, expected, fake_data_dir, run_dir, capsys):
    spec = write_spec(run_dir, fake_data_dir, **change)
    message = sweep_error([str(spec)], capsys)
    assert expected in message, message
    assert not (run_dir / "logs").exists()


# -- PostgreSQL ----------------------------------------------------------------------------------------------------


def postgres_binaries() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: path.parent.name)
    return next((folder for folder in reversed(folders) if (folder / "initdb").is_file()), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url() -> Any:
    """A throwaway PostgreSQL server in a temporary folder on a free port, and its URL; stopped and removed after.
    (As root, the server runs as the ``postgres`` user: PostgreSQL refuses to run as root.)"""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install -e .[sweep])")
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL's initdb is not installed (apt-get install postgresql)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="sweep-postgres-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a postgres user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    port, data = free_port(), folder / "data"
    # The server's output goes to its log file: a pipe it inherited would keep subprocess.run waiting after pg_ctl.
    run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "timeout": 120}
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "sweeps", "--auth=trust"], **run)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "start"]
    subprocess.run([*as_user, *start], **run)
    try:
        yield f"postgresql://sweeps@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], **run)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_postgresql_server(postgres_url, fake_data_dir, run_dir):
    spec = write_spec(run_dir, fake_data_dir)
    main([str(spec), "--workers", "2", "--name", "pg", "--storage", postgres_url])
    assert not (run_dir / "logs" / "sweeps" / "pg" / "study.db").exists()  # the study is on the server
    assert_two_workers_ran_one_study("pg", postgres_url)


def unrun_sweep(folder: Path, trials: int) -> Any:
    """A sweep over one range whose trials are told at once, untrained (the worker loop and the study only)."""
    from project.sweeps.spec import Objective, load_spec
    from project.sweeps.storage import Sweep

    spec = folder / "unrun.yaml"
    spec.write_text(yaml.safe_dump({"space": {LR: {"low": 1.0e-4, "high": 1.0e-2, "log": True}}, "trials": trials}))
    sweep_folder = Path("logs") / "sweeps" / "unrun"
    sweep_folder.mkdir(parents=True, exist_ok=True)
    return Sweep(
        spec=load_spec(str(spec)),
        name="unrun",
        folder=sweep_folder,
        storage_url=f"sqlite:///{sweep_folder / 'study.db'}",
        objective=Objective("val/loss", "minimize"),
        trials=trials,
    )


def test_a_restarted_worker_does_not_draw_its_first_trials_again(run_dir, monkeypatch):
    from project.sweeps import study as worker_loop
    from project.sweeps.storage import open_study, storage_for

    def told_at_once(sweep, study, trial):
        study.tell(trial, sweep.spec.space[0].suggest(trial))
        return 1

    monkeypatch.setattr(worker_loop, "run_trial", told_at_once)
    first = unrun_sweep(run_dir, trials=2)
    open_study(first, storage_for(first))
    worker_loop.run_worker(first)
    worker_loop.run_worker(unrun_sweep(run_dir, trials=4))  # the same worker started again, asked for more
    drawn = [trial.params[LR] for trial in load("unrun").get_trials()]
    assert len(drawn) == 4 and len(set(drawn)) == 4, drawn


@pytest.mark.parametrize("recorded", ["../../elsewhere/version_0", "absolute", "trials/../../outside"])
def test_a_run_folder_recorded_outside_the_sweeps_trials_is_not_read(recorded, run_dir):
    import optuna

    sweep = unrun_sweep(run_dir, trials=1)
    recorded = str(run_dir / "elsewhere" / "version_1") if recorded == "absolute" else recorded
    outside = (sweep.folder / recorded).resolve()
    (outside / "checkpoints").mkdir(parents=True)
    (outside / "checkpoints" / "last.ckpt").write_bytes(b"not to be read")
    (outside / "config.yaml").write_text("model: {network: {class_path: elsewhere.Network}}\n")
    trial = optuna.trial.create_trial(value=0.5, params={}, distributions={}, user_attrs={"run_folder": recorded})
    inside = optuna.trial.create_trial(value=0.5, params={}, distributions={}, user_attrs={"run_folder": "trials/a"})
    assert sweep.run_folder(trial) is None
    assert sweep.run_folder(inside) == sweep.folder / "trials" / "a"
    from project.sweeps.results import write_best
    from project.sweeps.study import last_checkpoint

    assert last_checkpoint(sweep, trial) is None
    write_best(sweep, trial)
    assert not (sweep.folder / "best.yaml").exists()


def test_a_sweep_stopped_by_sigterm_exits_with_143_not_as_if_it_had_finished(monkeypatch):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from project.sweeps import command

    def preempted(args):
        raise SIGTERMException()  # as Lightning's loop raises it, after the trial was marked interrupted

    monkeypatch.setattr(command, "run_sweep", preempted)
    with pytest.raises(SystemExit) as stopped:
        main(["mnist"])
    assert stopped.value.code == 128 + signal.SIGTERM


def test_a_storage_that_cannot_be_opened_is_one_error_line_and_writes_no_sweep_folder(fake_data_dir, run_dir, capsys):
    spec = write_spec(run_dir, fake_data_dir)
    message = sweep_error([str(spec), "--storage", "nosuchdatabase://host/db"], capsys)
    assert message.startswith("error: --storage nosuchdatabase://host/db: cannot open it"), message
    assert not (run_dir / "logs").exists()


def test_text_in_trials_csv_that_a_spreadsheet_would_run_is_written_as_text():
    from project.sweeps.results import cell

    assert cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert cell("@SUM(A1)") == "'@SUM(A1)" and cell("host:12") == "host:12"
    assert cell(None) == "" and cell(0.5) == 0.5


SPEC_DIR = Path(__file__).parents[1] / "project" / "configs" / "sweeps"
SHIPPED_SPECS = sorted(path.stem for path in SPEC_DIR.glob("*.yaml"))


@pytest.mark.parametrize("spec", SHIPPED_SPECS)
def test_every_shipped_sweep_spec_is_valid_for_the_fit_command(spec):
    from project.sweeps.command import check_fit_args
    from project.sweeps.spec import load_spec

    loaded = load_spec(spec)
    assert loaded.space and loaded.trials > 0
    check_fit_args(loaded, [])  # every end of every range, and each choice, read by the fit parser


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"-c": "extra.yaml"}, "-c is not taken here: presets go in the spec's configs"),
        ({"c": "extra.yaml"}, "c is not taken here"),
        ({"-x": 1}, "'-x' is not an option name"),
        ({"trainer max_epochs": 1}, "'trainer max_epochs' is not an option name"),
    ],
)
def test_a_spec_option_that_is_no_option_name_is_refused_before_any_trial(
    options, message, fake_data_dir, run_dir, capsys
):
    spec = write_spec(run_dir, fake_data_dir, options={"data.data_dir": str(fake_data_dir), **TINY, **options})
    with pytest.raises(SystemExit) as caught:
        main([str(spec)])
    assert caught.value.code == 2 and message in capsys.readouterr().err
    assert not (run_dir / "logs").exists()


def test_config_files_among_the_fit_options_stack_on_every_trial(fake_data_dir, run_dir):
    (run_dir / "one_epoch.yaml").write_text("trainer: {max_epochs: 1}\n")
    spec = write_spec(run_dir, fake_data_dir, trials=1)
    main([str(spec), "-c", "one_epoch.yaml"])
    assert states(load("spec")) == ["COMPLETE"]


@pytest.mark.parametrize("kind", ["a text file", "a missing folder", "/dev/null"])
def test_a_sqlite_storage_that_cannot_be_used_is_one_line(kind, fake_data_dir, run_dir, capsys):
    (run_dir / "notes.txt").write_text("not a database\n")
    url = {
        "a text file": "sqlite:///notes.txt",
        "a missing folder": "sqlite:///no/such/folder/study.db",
        "/dev/null": "sqlite:////dev/null",
    }[kind]
    spec = write_spec(run_dir, fake_data_dir)
    with pytest.raises(SystemExit) as caught:
        main([str(spec), "--storage", url])
    error = capsys.readouterr().err
    assert caught.value.code == 2 and error.startswith(f"error: --storage {url}: cannot open it (")
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1
