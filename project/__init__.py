"""A PyTorch Lightning template: train a CNN on MNIST from scratch, then fine-tune it."""

import os
import sys

# `python -m project` puts the current folder first on sys.path, before the libraries and the standard library: a
# file such as tensorboard.py in a received run folder would be imported in place of the library. The project's
# commands import from the installed packages only (your own modules: --trust, project.trusted). Python sets
# sys.argv[0] to "-m" while it imports the package of `python -m`; a script or the `project` command puts its own
# folder first instead. The interpreters a run starts (DataLoader workers and ddp_spawn's processes, started with
# `python -c`, which puts the current folder first too) are told the same by PYTHONSAFEPATH (Python 3.11+: "don't
# prepend a potentially unsafe path to sys.path", as `python -P`; Python 3.10 ignores it, and nothing else changes).
# A `project/` folder in the current one is imported in place of this package before any of this runs: never run
# `python -m project` where a folder holds someone else's `project/` (the `project` command does not look there).
if sys.argv[:1] == ["-m"]:
    os.environ["PYTHONSAFEPATH"] = "1"
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath("."):
        del sys.path[0]

__version__ = "0.2.0"
