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


def test_images_are_written_each_validation_epoch_across_the_resume(short_run):
    events = read_events(short_run)
    val_steps = [event.step for a in events if "val/acc" in a.Tags()["scalars"] for event in a.Scalars("val/acc")]
    assert val_steps == [9, 19]  # after epoch 1 (first start) and epoch 2 (resumed), as Lightning counts steps
    for tag in IMAGES:
        steps = [event.step for a in events if tag in a.Tags()["images"] for event in a.Images(tag)]
        assert steps == val_steps  # at the validation scalars' steps: none repeated or rewound


def test_the_hparams_tab_lists_the_validation_metrics_and_the_settings(short_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    training = next(a for a in read_events(short_run) if "_hparams_/experiment" in a.summary_metadata)
    content = training.SummaryMetadata("_hparams_/experiment").plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    assert {info.name.tag for info in experiment.metric_infos} == {"val/acc", "val/f1", "val/loss"}
    names = {info.name for info in experiment.hparam_infos}
    assert {"optimizer/class_path", "optimizer/init_args/lr", "network/init_args/width"} <= names


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
