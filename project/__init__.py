"""A PyTorch Lightning template: train a CNN on MNIST from scratch, then fine-tune it."""

import os
import sys

# `python -m project` puts the current folder first on sys.path (Python sets sys.argv[0] to "-m" while it imports
# the package): take it off, so that a file such as tensorboard.py in a received run folder is never imported in place
# of a library, and tell the interpreters a run starts the same (PYTHONSAFEPATH; Python 3.11+). Why, and what this
# cannot prevent (a `project/` folder in the current one): docs/design_notes.md.
if sys.argv[:1] == ["-m"]:
    os.environ["PYTHONSAFEPATH"] = "1"
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath("."):
        del sys.path[0]

__version__ = "0.2.0"
