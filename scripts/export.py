#!/usr/bin/env python
"""``python -m project export`` (every option: ``--help``): a checkpoint's network as ONNX, .pt2 and safetensors.

python scripts/export.py logs/mnist/version_0/checkpoints/last.ckpt
python scripts/export.py CKPT --out exported/mnist --formats onnx safetensors
"""

from project.__main__ import script

script("export")
