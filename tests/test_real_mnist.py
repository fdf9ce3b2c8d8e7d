"""Real MNIST (../shared/data, or $PROJECT_DATA_DIR): the default config's first epoch on the CPU."""

import pytest
from helpers import EpochTimer

from project.cli import run_cli


@pytest.mark.slow
def test_one_epoch_of_the_default_config_reaches_98_percent_test_accuracy(real_data_dir, run_dir):
    cli = run_cli(
        [
            "fit",
            f"--data.data_dir={real_data_dir}",
            "--trainer.max_epochs=1",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=helpers.EpochTimer",
        ]
    )
    timer = next(callback for callback in cli.trainer.callbacks if isinstance(callback, EpochTimer))
    accuracy = cli.trainer.callback_metrics["test/acc"].item()
    seconds = timer.seconds[0]
    print(f"\nMNIST, default config, 1 epoch on the CPU: test accuracy {accuracy:.4f}, epoch time {seconds:.1f} s")
    assert accuracy >= 0.98
