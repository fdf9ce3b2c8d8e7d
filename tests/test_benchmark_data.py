"""scripts/benchmark_data.py end to end on tiny generated folders: every path reads every image, and the table, the
ratios, the slopes, the JSON and the plot come out (the numbers themselves are the benchmark's, not a test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_data.py"


@pytest.mark.slow
def test_the_data_benchmark_reads_every_image_every_way_and_writes_its_report(tmp_path):
    out, plot = tmp_path / "benchmark.json", tmp_path / "benchmark.png"
    args = ["--work-dir", str(tmp_path / "work"), "--data-dir", str(tmp_path / "no-mnist"), "--png", "300", "600",
            "--jpeg", "64", "--out", str(out), "--plot", str(plot)]  # fmt: skip
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout
    report = json.loads(out.read_text())
    paths = ["torchvision", "project-loader", "project-cache", "decode", "decode-float", "read-cache"]
    folders = [("png28", 300), ("png28", 600), ("jpeg224", 64)]
    assert [(r["kind"], r["path"]) for r in report["results"]] == [(kind, p) for kind, _ in folders for p in paths]
    for result in report["results"]:
        expected = 2 if result["path"].startswith(("torchvision", "project")) else 1
        assert len(result["epoch_seconds"]) == expected and min(result["epoch_seconds"]) > 0, result
    cached = next(r for r in report["results"] if r["path"] == "project-cache")
    assert cached["images"] == 298 and round(cached["disk_mb"] * 2**20) == 4096 + 300 * 784  # the whole folder
    assert [(r["images"], r["count"]) for r in report["ratios"]] == folders
    assert {(s["images"], s["path"]) for s in report["slopes"]} == {("png28", path) for path in paths}
    assert "| png28 | 598 | project-cache |" in printed and "loader / torchvision" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
