#!/usr/bin/env python
"""Search hyperparameters with Optuna: ``python -m project sweep`` with a shorter name.

    python scripts/sweep.py mnist                                  # project/configs/sweeps/mnist.yaml
    python scripts/sweep.py mnist --workers 2                      # two worker processes on one study
    python scripts/sweep.py my_sweep.yaml --data.data_dir ../shared/data --trials 40
    python -m project fit --config logs/sweeps/mnist/best.yaml     # train the best trial's config again

Every option of ``python -m project sweep --help`` works here too; see docs/sweeps.md.
"""

from project.sweeps import main

if __name__ == "__main__":
    main()
