#!/usr/bin/env python
"""``python -m project fit`` (every option: ``--help``), then a test of the best checkpoint.

python scripts/train.py --config classic.yaml             # the classic tutorial's settings
python scripts/train.py --data.data_dir ../shared/data    # files already on disk (offline)
python scripts/train.py --ckpt_path last                  # resume the newest run of the recipe
"""

from project.cli import train_main

train_main()
