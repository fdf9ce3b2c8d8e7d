"""What the project writes is readable as any other file of the run (the umask's mode), and is written whole or not
at all, on a full disk too: one line, the previous file intact, no temporary or partial file left."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import cli_error, run_script

from project.cli import run_cli
from project.errors import DiskFullError


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_checkpoints_predictions_reports_and_exports_are_readable_by_others_under_a_umask_of_022(
    quick_args, run_dir, umask_022, tmp_path
):
    from project.inference.export import export_checkpoint
    from project.inference.prediction import Predictor
    from project.inference.prediction_files import image_paths, write_csv

    run_cli(["fit", *quick_args, "--trainer.max_epochs=1"])
    run = run_dir / "logs" / "mnist" / "version_0"
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2 and all(mode(path) == 0o644 for path in checkpoints)  # best and last
    assert mode(run / "config.yaml") == 0o644  # as the logs always were
    last = run / "checkpoints" / "last.ckpt"
    images = tmp_path / "images"
    images.mkdir()
    from conftest import write_image_folder

    write_image_folder(images, {"a": 2}, mode="L", size=28)
    rows, _ = Predictor.load(last).predict(image_paths([str(images)]))
    write_csv(rows, tmp_path / "predictions.csv")
    assert mode(tmp_path / "predictions.csv") == 0o644
    from project.inference.evaluation import evaluate_checkpoint

    _, written = evaluate_checkpoint(last, "test", None, tmp_path / "report")
    assert len(written) == 3 and all(mode(path) == 0o644 for path in written)
    export_checkpoint(last, tmp_path / "exported", ("safetensors",))
    assert mode(tmp_path / "exported") == 0o755 and mode(tmp_path / "exported" / "model.safetensors") == 0o644


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A folder on a 4 MiB tmpfs of its own (mounting needs root, as CI has): a disk that fills up for real."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the disk of ``folder`` until ``leave`` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with (folder / "filler").open("wb") as file:
        file.write(b"\0" * max(free - leave, 0))


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if path.name != "filler" and path.is_file())


def test_a_checkpoint_save_on_a_full_disk_is_one_line_and_keeps_the_previous_one(small_disk, pretrained_checkpoint):
    import torch

    from project.training.checkpoints import AtomicCheckpointIO

    checkpoint = torch.load(pretrained_checkpoint, weights_only=True)
    target = small_disk / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")
    fill(small_disk, leave=64 * 1024)  # a 14 MB checkpoint cannot fit; torch reports it as a RuntimeError
    with pytest.raises(DiskFullError, match=r"No space left on device while writing a checkpoint .* is unchanged"):
        AtomicCheckpointIO().save_checkpoint(checkpoint, target)
    assert target.read_bytes() == b"the previous checkpoint" and leftovers(small_disk) == ["last.ckpt"]


def test_training_into_a_full_disk_ends_with_the_disk_full_line(quick_args, run_dir, small_disk, capsys):
    message = cli_error(
        ["fit", *quick_args, f"--trainer.logger.init_args.save_dir={small_disk}", "--trainer.max_epochs=1"],
        capsys,
        code=1,
    )
    assert message.startswith("error: No space left on device while writing a checkpoint into")
    assert not [name for name in leftovers(small_disk) if name.endswith(".tmp")]  # no temporary file left


def test_prediction_evaluation_and_export_on_a_full_disk_are_one_line_and_leave_nothing_partial(
    small_disk, pretrained_checkpoint, tmp_path, capsys, monkeypatch
):
    from conftest import write_image_folder

    images = write_image_folder(tmp_path / "images", {"a": 3}, mode="L", size=28)
    fill(small_disk, leave=0)
    commands = {
        "predict.py": [str(pretrained_checkpoint), str(images), "--out", str(small_disk / "p.csv")],
        "evaluate.py": [str(pretrained_checkpoint), "--out", str(small_disk / "report")],
        "export.py": [str(pretrained_checkpoint), "--out", str(small_disk / "exported")],
    }
    for script, args in commands.items():
        code, _, err = run_script(script, args, capsys, monkeypatch)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1 and "Traceback" not in err, (script, err[-3000:])
        assert len(errors) == 1 and errors[0].startswith("error: No space left on device"), (script, err)
        assert leftovers(small_disk) == [], (script, leftovers(small_disk))
