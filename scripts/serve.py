#!/usr/bin/env python
"""``python -m project serve`` (every option: ``--help``): an HTTP server that predicts images with an exported model.

python scripts/serve.py exported/mnist --port 8000
curl -F files=@digit.png http://127.0.0.1:8000/predict
"""

from project.__main__ import script

script("serve")
