"""A PyTorch Lightning template: train a CNN on MNIST from scratch, then fine-tune it."""

import os
import sys

# `python -m project` puts the current folder first on sys.path, before the libraries and the standard library: a
# file such as tensorboard.py in a received run folder would be imported in place of the library. The project's
# commands import from the installed packages only (your own modules: --trust, project.trusted). Python sets
# sys.argv[0] to "-m" while it imports the package of `python -m`; a script or the `project` command puts its own
# folder first instead.
if sys.argv[:1] == ["-m"] and sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath("."):
    del sys.path[0]

__version__ = "0.2.0"
