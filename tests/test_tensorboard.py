"""TensorBoard: the event files hold the scalars, images, graph and HParams; a real browser shows the dashboards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from project.cli import run_cli

SCALARS = {"train/loss_step", "train/loss_epoch", "train/acc", "val/acc", "val/f1", "val/loss", "lr-AdamW/head"}
IMAGES = {"val/confusion_matrix", "val/samples", "val/worst"}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, fake_data_dir) -> Path:
    """The version folder of a 2-epoch CLI run on the generated data, with the default callbacks, interrupted after
    its first epoch and resumed: what TensorBoard shows must look like one uninterrupted run."""
    from helpers import Interrupted

    folder = tmp_path_factory.mktemp("tensorboard_run")
    args = ["fit", "--config=debug", f"--data.data_dir={fake_data_dir}", "--data.split.val_size=100"]
    args.append("--trainer.val_check_interval=0.5")  # twice an epoch: a validation in the middle, as base.yaml has
    previous = Path.cwd()
    os.chdir(folder)
    try:
        with pytest.raises(Interrupted):
            run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtEpoch", "--trainer.callbacks.epoch=1"])
        run_cli([*args, "--ckpt_path=last"])
    finally:
        os.chdir(previous)
    assert [path.name for path in (folder / "logs" / "mnist").iterdir()] == ["version_0"]
    return folder / "logs" / "mnist" / "version_0"


def read_events(run_folder: Path) -> list[EventAccumulator]:
    accumulators = []
    for path in sorted(run_folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        accumulator.Reload()
        accumulators.append(accumulator)
    return accumulators


def test_event_files_hold_the_scalar_image_graph_and_hparams_tags(short_run):
    events = read_events(short_run)
    scalars = set().union(*(set(a.Tags()["scalars"]) for a in events))
    images = set().union(*(set(a.Tags()["images"]) for a in events))
    assert scalars >= SCALARS and {"test/acc", "test/f1"} <= scalars
    assert images == IMAGES
    assert sum(a.Tags()["graph"] for a in events) == 1  # the model graph, once
    hparams = set().union(*(set(a.summary_metadata) for a in events))
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= hparams


def test_images_are_written_at_each_validation_across_the_resume(short_run):
    events = read_events(short_run)
    val_steps = [event.step for a in events if "val/acc" in a.Tags()["scalars"] for event in a.Scalars("val/acc")]
    assert val_steps == [4, 9, 14, 19]  # mid-epoch and at the end of epoch 1 (first start) and 2 (resumed)
    for tag in IMAGES:
        steps = [event.step for a in events if tag in a.Tags()["images"] for event in a.Images(tag)]
        assert steps == val_steps  # at the validation scalars' steps: none repeated or rewound


def test_the_hparams_tab_lists_the_validation_metrics_and_the_settings(short_run):
    experiment = written_experiment(short_run)
    assert {info.name.tag for info in experiment.metric_infos} == {"val/acc", "val/f1", "val/loss"}
    names = {info.name for info in experiment.hparam_infos}
    assert {"optimizer/class_path", "optimizer/init_args/lr", "network/init_args/width"} <= names


def test_a_default_run_validates_four_times_an_epoch_with_images_at_each(fake_data_dir, run_dir):
    args = [f"--data.data_dir={fake_data_dir}", "--data.split.val_size=100", "--trainer.enable_progress_bar=false"]
    run_cli(["fit", *args, "--trainer.max_epochs=1", "--test_after_fit=false", "--trainer.enable_model_summary=false"])
    events = read_events(run_dir / "logs" / "mnist" / "version_0")  # base.yaml's trainer: 8 steps, no debug preset
    val_steps = [event.step for a in events if "val/acc" in a.Tags()["scalars"] for event in a.Scalars("val/acc")]
    assert val_steps == [1, 3, 5, 7]  # every 2 of the epoch's 8 steps (at epoch ends only, it would be [7])
    for tag in IMAGES:
        assert [event.step for a in events if tag in a.Tags()["images"] for event in a.Images(tag)] == val_steps


def written_experiment(run_folder: Path):
    """The HParams experiment (columns) of the run's event files, as TensorBoard's HParams plugin reads it."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    training = next(a for a in read_events(run_folder) if "_hparams_/experiment" in a.summary_metadata)
    content = training.SummaryMetadata("_hparams_/experiment").plugin_data.content
    return plugin_data_pb2.HParamsPluginData.FromString(content).experiment


def tensorboards_column_order(experiment) -> list[str]:
    """The order TensorBoard 2.21's HParams plugin shows the columns in: those marked as differing first, then by
    name (tensorboard/plugins/hparams/backend_context.py, ``_sort_and_reduce_to_hparams_limit``)."""
    return [info.name for info in sorted(experiment.hparam_infos, key=lambda info: (not info.differs, info.name))]


def test_the_hparams_tab_leads_with_the_options_that_differ_from_their_defaults(short_run):
    experiment = written_experiment(short_run)
    written = [info.name for info in experiment.hparam_infos]
    marked = [info.name for info in experiment.hparam_infos if info.differs]
    assert {"optimizer/init_args/lr", "network/init_args/fc_dropout"} <= set(marked)  # base.yaml's, not AdamW's
    assert "network/init_args/depth" not in marked and "optimizer/init_args/eps" in written  # at their defaults
    assert written[: len(marked)] == marked  # in the file: the changed ones first
    assert tensorboards_column_order(experiment)[: len(marked)] == sorted(marked)
    assert not any(name.startswith("speed/") for name in written)  # channels_last, compile: at their defaults, left out
    assert "finetuning/backbone_lr" not in written and "lora" not in written  # None, as by default: features not used
    assert written[-1] == "optimizer/init_args/foreach"  # speed only, set by base.yaml: last, not among the changed


def test_a_sweep_trials_sampled_options_lead_its_hparams_row_and_only_they_are_marked(tmp_path):
    from types import SimpleNamespace

    from project.reports.tensorboard import RunLogger, TensorBoardReports, hparams_order, write_hparams
    from project.sweeps.spec import Objective
    from project.sweeps.trial import TrialCallback

    reports = TensorBoardReports()
    sampled = {"model.optimizer.init_args.lr": 0.01, "model.network.init_args.width": 16}
    trial = TrialCallback(None, Objective("val/acc", "maximize"), sampled, 3, tmp_path)
    trial.add_hparams(SimpleNamespace(callbacks=[reports], datamodule=None))
    params = {"network/init_args/depth": 2, "optimizer/init_args/eps": 1e-8, **reports.extra_hparams}
    ordered, differs = hparams_order(
        params, {"network/init_args/depth": 1, "optimizer/init_args/eps": 1e-8}, reports.leading
    )
    assert list(ordered)[:3] == [
        "sweep/model.optimizer.init_args.lr",
        "sweep/model.network.init_args.width",
        "sweep/trial",
    ]
    assert list(ordered)[3] == "network/init_args/depth"  # then what differs from its default, then the rest
    assert differs == {*list(ordered)[:3]}  # the same in every trial: only the sampled options differ between them
    logger = RunLogger(save_dir=str(tmp_path), name="sweep")
    write_hparams(logger, ordered, {"val/acc": 0.0}, differs)
    logger.experiment.flush()
    experiment = written_experiment(Path(logger.log_dir))
    assert [info.name for info in experiment.hparam_infos] == list(ordered)
    assert tensorboards_column_order(experiment)[:3] == sorted(list(ordered)[:3])


def test_negative_control_without_a_leading_option_nothing_is_marked(tmp_path):
    from project.reports.tensorboard import hparams_order

    ordered, differs = hparams_order({"a": 1, "b": 2}, {"a": 1, "b": 2})
    assert list(ordered) == ["a", "b"] and differs == set()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, "tensorboard exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"tensorboard did not listen on 127.0.0.1:{port} within {seconds} s")


def deep_text(driver) -> str:
    """The text of the page, shadow roots included (TensorBoard's dashboards are web components)."""
    return driver.execute_script(
        """
        const walk = (node) => {
          let text = "";
          if (node.shadowRoot) text += walk(node.shadowRoot);
          for (const child of node.childNodes) text += child.nodeType === 3 ? child.textContent + " " : walk(child);
          return text;
        };
        return walk(document.body);
        """
    )


@pytest.mark.slow
@pytest.mark.browser
def test_tensorboard_shows_the_runs_dashboards_in_a_real_browser(short_run):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    port = free_port()
    logdir = short_run.parent.parent
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)  # fmt: skip
    shots = Path(os.environ.get("TENSORBOARD_SCREENSHOTS") or short_run.parent / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    wait_for_port(port, server)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    scalar_filter = quote("val/acc|val/f1|train/loss_step|lr-AdamW/head", safe="")  # cards render lazily: filter
    pages = {
        "scalars": (f"scalars&tagFilter={scalar_filter}", ["val/acc", "val/f1", "train/loss_step", "lr-AdamW/head"]),
        "images": ("images", sorted(IMAGES)),
        "hparams": ("hparams", ["val/acc", "val/f1", "val/loss", "optimizer/init_args/lr"]),
    }
    try:
        for dashboard, (fragment, tags) in pages.items():
            driver.get("about:blank")  # a fresh page each time: nothing left over from the previous dashboard
            driver.get(f"http://127.0.0.1:{port}/#{fragment}")
            deadline, text = time.monotonic() + 60, ""
            while time.monotonic() < deadline and not all(tag in text for tag in tags):
                time.sleep(1)
                text = deep_text(driver)
            time.sleep(2)  # let the charts and images finish drawing for the screenshot
            driver.save_screenshot(str(shots / f"tensorboard_{dashboard}.png"))
            missing = [tag for tag in tags if tag not in text]
            assert not missing, f"the {dashboard} dashboard does not show {missing}"
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)
