"""How far a long loop outside a Trainer is (``evaluate``, ``predict``): :class:`Counting` says it every few seconds
(``predict: 512/2,000 images (410/s)``). It imports nothing heavy: ``predict`` from an ONNX file counts with it and runs
without torch (:mod:`project.inference.numpy_predictor`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def _say(text: str) -> None:
    print(text, flush=True)


class Counting:
    """How far a loop outside a Trainer is (``evaluate``, ``predict``): ``predict: 512/2000 images``, at most every
    ``every`` seconds, the first after ``every`` seconds (a loop done sooner says nothing), the last when it ends.

    Args:
        what: the line's start (``predict``).
        unit: what is counted (``images``).
        total: how many there are, if known.
        every: seconds between lines.
        out: where lines go.
    """

    def __init__(
        self, what: str, unit: str, total: int | None = None, every: float = 2.0, out: Callable[[str], None] = _say
    ) -> None:
        self.what, self.unit, self.total, self.every, self.out = what, unit, total, every, out
        self.started = self.last = time.perf_counter()
        self.done = 0
        self.said: int | None = None
        """The count last said, if any."""

    def __call__(self, count: int) -> None:
        """``count`` more are done."""
        self.done += count
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last, self.said = now, self.done
            self.out(self.line())

    def through(self, batches: Iterable[Any]) -> Iterator[Any]:
        """``batches`` as they come, each counted by the length of its first item (the images)."""
        for batch in batches:
            yield batch
            self(len(batch[0]))

    def line(self) -> str:
        of = f"/{self.total:,}" if self.total is not None else ""
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        return f"{self.what}: {self.done:,}{of} {self.unit} ({rate:,.0f}/s)"

    def end(self) -> None:
        """Say the final count, if the loop was long enough to be said at all and it was not the last said."""
        if self.said is not None and self.said != self.done:
            self.out(self.line())
