"""The scripts users run: the benchmark's smoke run on generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_benchmark_runs_its_four_ways_and_writes_the_table_and_json(tmp_path):
    from idx import write_mnist_folder

    data = write_mnist_folder(tmp_path / "data", train_count=6000, test_count=500)  # the preset holds out 5,000
    out = tmp_path / "benchmark.json"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--data-dir", str(data), "--quick",
               "--epochs", "1", "--out", str(out)]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| run | epoch | training s | training + evaluation s | images/s | test accuracy |" in result.stdout
    assert "project/tutorial epoch time:" in result.stdout and "project-fast/tuned epoch time:" in result.stdout
    report = json.loads(out.read_text())
    assert [run["name"] for run in report["runs"]] == ["tutorial", "tuned", "project", "project-fast"]
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
