"""The scripts users run: the benchmark's smoke run on generated data, and its table of seeds side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import script_function

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_benchmark_runs_its_five_ways_and_writes_the_table_and_json(tmp_path):
    from idx import write_mnist_folder

    data = write_mnist_folder(tmp_path / "data", train_count=6000, test_count=500)  # the preset holds out 5,000
    out = tmp_path / "benchmark.json"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--data-dir", str(data), "--quick",
               "--epochs", "1", "--out", str(out)]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| run | seed | epoch | training s | training + evaluation s | images/s | test accuracy |" in result.stdout
    assert "project/tutorial epoch time:" in result.stdout and "project-fast/tuned epoch time:" in result.stdout
    seeds = "| seed | tutorial epoch s | tuned epoch s | project epoch s | one-epoch epoch s | project-fast epoch s |"
    assert seeds in result.stdout
    assert "one-epoch/tutorial epoch time:" in result.stdout
    report = json.loads(out.read_text())
    assert [run["name"] for run in report["runs"]] == ["tutorial", "tuned", "project", "one-epoch", "project-fast"]
    assert all(run["epochs"] and run["peak_rss_mb"] > 0 for run in report["runs"])
    assert not (tmp_path / "logs").exists()  # the Trainer runs log into a temporary folder


@pytest.mark.slow
def test_the_startup_benchmark_times_each_command_and_writes_the_table_and_json(
    pretrained_checkpoint, fake_data_dir, tmp_path
):
    out = tmp_path / "startup.json"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_startup.py"), "--data-dir", str(fake_data_dir),
               "--checkpoint", str(pretrained_checkpoint), "--quick", "--images", "3", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "| command | first line s (min / median) | whole process s (min / median) |" in result.stdout
    report = json.loads(out.read_text())
    names = [row["command"] for row in report["commands"]]
    assert names[:2] == ["import project", "import torch (reference)"] and "predict, model folder (ONNX)" in names
    assert all(0 < row["first_line_min"] <= row["end_min"] for row in report["commands"])
    assert list(tmp_path.iterdir()) == [out]  # its work folder is removed


def test_the_benchmark_puts_each_seeds_ways_side_by_side_with_the_ratio_and_the_lowest_accuracy():
    seed_table = script_function("benchmark.py", "seed_table")
    ratios = script_function("benchmark.py", "ratios")
    run, epoch = seed_table.__globals__["Run"], seed_table.__globals__["Epoch"]

    def way(name: str, seed: int, seconds: float, accuracy: float):
        return run(name, seed, epochs=[epoch(seconds - 1, seconds, 1000.0, accuracy)])

    runs = [way("tutorial", 0, 60.0, 0.95), way("one-epoch", 0, 45.0, 0.991),
            way("tutorial", 1, 50.0, 0.94), way("one-epoch", 1, 40.0, 0.990)]  # fmt: skip
    lines = seed_table(runs).splitlines()
    header = "| seed | tutorial epoch s | one-epoch epoch s | tutorial accuracy | one-epoch accuracy |"
    assert lines[0] == header + " one-epoch / tutorial |"
    assert lines[2] == "| 0 | 60.0 | 45.0 | 95.00% | 99.10% | 0.75x |"
    assert lines[3] == "| 1 | 50.0 | 40.0 | 94.00% | 99.00% | 0.80x |"
    assert lines[4] == "| mean time, lowest accuracy | 55.0 | 42.5 | 94.00% | 99.00% | 0.77x |"
    assert ratios(runs)["one-epoch/tutorial epoch time"] == pytest.approx(42.5 / 55.0)
    assert len(seed_table(runs[:2]).splitlines()) == 3  # negative control: no summary row for a single seed
