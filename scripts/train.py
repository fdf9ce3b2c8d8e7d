#!/usr/bin/env python
"""Train a model, then test its best checkpoint: ``python -m project fit`` with a shorter name.

    python scripts/train.py                                   # MNIST with project/configs/mnist.yaml
    python scripts/train.py --config classic.yaml             # the classic tutorial's settings
    python scripts/train.py --data.data_dir ../shared/data    # files already on disk (offline)
    python scripts/train.py --ckpt_path last                  # resume the newest run of the recipe

Every option of ``python -m project fit --help`` works here too.
"""

from project.cli import train_main

if __name__ == "__main__":
    train_main()
