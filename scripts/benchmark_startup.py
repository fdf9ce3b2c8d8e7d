#!/usr/bin/env python
"""How fast the commands start: each one's whole process, timed from its start to its first line of output and to
its end, over several runs (min and median), as a user at a shell sees it.

    python scripts/benchmark_startup.py --data-dir ../shared/data
    python scripts/benchmark_startup.py --checkpoint logs/mnist/version_0/checkpoints/last.ckpt --runs 10
    python scripts/benchmark_startup.py --data-dir ../shared/data --quick      # one run each: a smoke test

Without ``--checkpoint`` a small one is trained first (``fit --config debug``, one epoch of 10 steps, in a temporary
folder; its accuracy does not matter here), and exported (``export``: ``model.onnx``, ``model.safetensors``,
``config.json``). The commands timed, each in a new process (``python -m project ...``, with this clone first on
``PYTHONPATH``): ``import project``, ``import torch`` (the reference: what the torch-free path saves), ``--help``,
``predict --help``, ``predict`` of ``--images`` MNIST test images (PNG files) from the model folder, its
``model.onnx`` and the checkpoint, ``evaluate`` of the checkpoint on the validation split, and ``export`` of the
checkpoint. ``predict``'s end is its first prediction: the CSV is written whole, at once. Prints a Markdown table;
``--out`` writes the results as JSON. The numbers are the machine's: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEAKING = ("--help", "predict --help", "predict, model folder (ONNX)", "predict, model.onnx", "predict, checkpoint",
            "evaluate, checkpoint (val)", "export, checkpoint")  # fmt: skip
"""The commands that print (the imports print nothing: their first line is their end)."""


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def timed(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """``command``'s whole process: seconds to its first line (stdout or stderr), seconds to its end, its output."""
    paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=environment
    )
    first = process.stdout.readline()
    first_line = time.perf_counter() - start
    rest = process.stdout.read()
    code = process.wait()
    end = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit status {code}):\n{(first + rest)[-3000:]}")
    return (first_line if first else end), end, first + rest


def project_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "project", *args]


def prepare(work: Path, data_dir: Path, checkpoint: Path | None, images: int) -> tuple[Path, Path, Path]:
    """The checkpoint (trained here if not given), its model folder, and a folder of MNIST test images as PNG."""
    import numpy as np
    from PIL import Image

    if checkpoint is None:
        print("training a small checkpoint (fit --config debug, 10 steps) ...", flush=True)
        fit = [
            "fit",
            "--config=debug",
            f"--data.data_dir={data_dir}",
            "--trainer.max_epochs=1",
            "--test_after_fit=false",
        ]
        timed(project_command(*fit), work)
        checkpoint = work / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"
    folder = work / "model"
    timed(project_command("export", str(checkpoint), "--out", str(folder)), work)
    digits = work / "digits"
    digits.mkdir()
    raw = (data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()  # IDX: a 16-byte header, then pixels
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:images]
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(digits / f"{index:04d}.png")
    return checkpoint.resolve(), folder, digits


def commands(checkpoint: Path, folder: Path, digits: Path, data_dir: Path, work: Path) -> dict[str, object]:
    """What is timed: a name, and its command line as a function of the run's number (outputs must be new)."""
    onnx = folder / "model.onnx"
    return {
        "import project": lambda run: [sys.executable, "-c", "import project"],
        "import torch (reference)": lambda run: [sys.executable, "-c", "import torch"],
        "--help": lambda run: project_command("--help"),
        "predict --help": lambda run: project_command("predict", "--help"),
        "predict, model folder (ONNX)": lambda run: predict(folder, digits, work / f"folder-{run}.csv"),
        "predict, model.onnx": lambda run: predict(onnx, digits, work / f"onnx-{run}.csv"),
        "predict, checkpoint": lambda run: predict(checkpoint, digits, work / f"checkpoint-{run}.csv"),
        "evaluate, checkpoint (val)": lambda run: project_command(
            "evaluate", str(checkpoint), "--split", "val", f"--data.data_dir={data_dir}", "--out", str(work / f"e{run}")
        ),
        "export, checkpoint": lambda run: project_command("export", str(checkpoint), "--out", str(work / f"x{run}")),
    }


def predict(model: Path, images: Path, out: Path) -> list[str]:
    return project_command("predict", str(model), str(images), "--out", str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data", help="holds MNIST/raw")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint (default: train a small one)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (min and median reported)")
    parser.add_argument("--images", type=int, default=20, help="images predicted")
    parser.add_argument("--quick", action="store_true", help="one run of each: a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    options = parser.parse_args()
    runs = 1 if options.quick else options.runs
    work = Path(tempfile.mkdtemp(prefix="benchmark_startup_"))
    try:
        data_dir = options.data_dir.resolve()
        checkpoint, folder, digits = prepare(work, data_dir, options.checkpoint, options.images)
        results = {}
        for run in range(runs):  # the commands in turn, so that a busy moment of the machine touches all of them
            for name, command in commands(checkpoint, folder, digits, data_dir, work).items():
                first_line, end, _ = timed(command(run), work)
                results.setdefault(name, []).append((first_line, end))
                print(f"run {run + 1}/{runs}: {name}: first line {first_line:.2f} s, end {end:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report_table(results, runs, options)


def report_table(results: dict[str, list[tuple[float, float]]], runs: int, options: argparse.Namespace) -> None:
    """The Markdown table (min and median of each command's first line and end), and the JSON if asked."""
    about = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\n{about}, {runs} run(s) each, {options.images} images predicted\n")
    print("| command | first line s (min / median) | whole process s (min / median) |")
    print("|---|---|---|")
    rows = []
    for name, times in results.items():
        firsts, ends = [first for first, _ in times], [end for _, end in times]
        row = {"command": name, "first_line_min": min(firsts), "first_line_median": statistics.median(firsts),
               "end_min": min(ends), "end_median": statistics.median(ends), "runs": times}  # fmt: skip
        rows.append(row)
        first = f"{row['first_line_min']:.2f} / {row['first_line_median']:.2f}" if name in SPEAKING else "-"
        print(f"| {name} | {first} | {row['end_min']:.2f} / {row['end_median']:.2f} |")
    if options.out is not None:
        report = {"machine": about, "runs": runs, "images": options.images, "commands": rows}
        options.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
