"""``python -m project fit|validate|test ...`` (predictions for new images: ``scripts/predict.py``), and
``python -m project sweep SPEC ...`` (hyperparameter sweeps: :mod:`project.sweeps`); the ``project`` command is the
same."""

import sys


def main() -> None:
    """Hand ``sweep`` to the sweeps, everything else to the training command line."""
    if sys.argv[1:2] == ["sweep"]:
        from project.sweeps import main as sweep_main

        sweep_main(sys.argv[2:])
    else:
        from project.cli import main as cli_main

        cli_main()


if __name__ == "__main__":
    main()
