"""The multiplier of the learning rate at an optimizer step (:class:`LRFactor`): the shapes of the project's schedules
as pure functions of where a step is read on a cycle, and the cycle re-planned when a resumed run ends at another
step. Each schedule of :mod:`project.training.schedules` holds one per parameter group (docs/schedules.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from project.errors import UserInputError

# -- the shapes, as functions of where a step is read on a cycle -----------------------------------------------------


def one_cycle(position: float, cycle_steps: int, warmup_steps: int) -> float:
    """torch's OneCycleLR shape at ``position`` of a cycle of ``cycle_steps`` steps: a cosine warm-up from 1/25 to 1
    over the first ``warmup_steps`` (at least 1), then a cosine decay to 1/250,000 at the cycle's last step."""
    start, end = 1 / 25, 1 / 250_000
    warmup = max(1, warmup_steps)
    if position < warmup:
        return start + (1 - start) * (1 - math.cos(math.pi * position / warmup)) / 2
    progress = min(1.0, (position - warmup) / max(1, cycle_steps - 1 - warmup))
    return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2


def _warmup_then_decay(
    position: float, cycle_steps: int, warmup: int, min_fraction: float, decay: Callable[[float], float]
) -> float:
    """A linear warm-up from 0 to 1 over the first ``warmup`` steps, then ``decay`` of the progress (1 at 0, 0 at 1)
    between 1 and ``min_fraction``; the progress is 1 at position ``cycle_steps``, one past the cycle's last step.
    Hugging Face's ``get_cosine_schedule_with_warmup`` and ``get_linear_schedule_with_warmup`` formulas, with a
    floor."""
    if position < warmup:
        return position / warmup
    progress = min(1.0, (position - warmup) / max(1, cycle_steps - warmup))
    return min_fraction + (1 - min_fraction) * decay(progress)


def stepped(step: int, gamma: float, every: int, milestones: list[int]) -> float:
    """``gamma`` to the power of the drops before ``step``: one every ``every`` steps, or one at each milestone."""
    drops = step // every if every else sum(step >= milestone for milestone in milestones)
    return gamma**drops


SHAPES: dict[str, Callable[[float, int, int, float], float]] = {
    "onecycle": lambda at, cycle, warmup, floor: one_cycle(at, cycle, warmup),
    "cosine": lambda at, cycle, warmup, floor: _warmup_then_decay(at, cycle, warmup, floor, _half_cosine),
    "linear": lambda at, cycle, warmup, floor: _warmup_then_decay(
        at, cycle, warmup, floor, lambda progress: 1 - progress
    ),
}
"""The schedules that are a shape over the run's steps (so a run of another length rescales them): the factor at a
position of a cycle of some steps, given the warm-up's steps and the floor."""


def _half_cosine(progress: float) -> float:
    """1 at 0, down a half cosine to 0 at 1."""
    return (1 + math.cos(math.pi * progress)) / 2


DEFAULT_WARMUP_FRACTION = 0.2
"""The warm-up of ``onecycle``, ``cosine`` and ``linear`` when none is given: a fifth of each cycle."""


@dataclass
class LRFactor:
    """The multiplier of a parameter group's learning rate at an optimizer step.

    ``schedule`` is ``none`` (1 throughout), a shape of :data:`SHAPES` over ``total_steps`` (``onecycle``, ``cosine``,
    ``linear``), or ``step`` (:func:`stepped`: ``gamma`` at every drop). The factor is 0 for the first
    ``frozen_steps`` steps. A resumed run that is to end at another step re-plans what is left of a shape
    (:meth:`replan`); each re-planning is one entry of ``changes``. Plain fields, so the scheduler's state dict
    stays plain values.
    """

    total_steps: int
    schedule: str = "none"
    warmup_fraction: float = DEFAULT_WARMUP_FRACTION
    """The warm-up's share of each cycle's steps, where ``warmup_steps`` is 0."""
    frozen_steps: int = 0
    changes: list[list[float]] = field(default_factory=list)
    """``[step, position, rate, cycle_steps]``: from ``step`` on, the factor is read at ``position + (s - step) *
    rate`` of a cycle of ``cycle_steps`` steps."""
    min_lr_fraction: float = 0.0
    """``cosine`` and ``linear`` end at this fraction of the learning rate."""
    gamma: float = 0.1
    step_every: int = 0
    """``step``: optimizer steps between drops (0: the drops are at ``milestones``)."""
    milestones: list[int] = field(default_factory=list)
    """``step``: the optimizer steps at which the learning rate is multiplied by ``gamma``."""
    warmup_steps: int = 0
    """The warm-up of each cycle in optimizer steps, whatever its length (0: ``warmup_fraction`` of it)."""

    def position(self, step: int) -> tuple[float, int]:
        """Where step ``step`` is read on the cycle, and the cycle's length."""
        position, cycle = float(step), self.total_steps
        for start, start_position, rate, cycle_steps in self.changes:
            if step >= start:
                position, cycle = start_position + (step - start) * rate, int(cycle_steps)
        return position, cycle

    def warmup(self, cycle_steps: int) -> int:
        """The warm-up's length in a cycle of ``cycle_steps`` steps."""
        return self.warmup_steps or int(self.warmup_fraction * cycle_steps)

    def __call__(self, step: int) -> float:
        if step < self.frozen_steps:
            return 0.0
        if self.schedule == "none":
            return 1.0
        if self.schedule == "step":
            return stepped(step, self.gamma, self.step_every, self.milestones)
        position, cycle = self.position(step)
        return SHAPES[self.schedule](position, cycle, self.warmup(cycle), self.min_lr_fraction)

    def end_step(self, step: int) -> int:
        """The step at which the plan in force at ``step`` ends."""
        end = float(self.total_steps)
        for start, start_position, rate, cycle_steps in self.changes:
            if step >= start:
                end = start + (cycle_steps - start_position) / rate
        return round(end)

    def replan(self, step: int, total_steps: int) -> str:
        """End the schedule at ``total_steps`` instead, from ``step`` on; say what was done.

        What is left of the shape (the rest of the warm-up, if any, and of the decay) is stretched (or squeezed) over
        the steps that are left, so the learning rate goes on from where it was; a warm-up of ``warmup_steps`` keeps
        its steps, and only the decay after it is stretched. A shape that has already ended starts again over the
        extra steps: warm-up, peak, decay, as a new schedule (a warm restart).
        """
        name = "one-cycle" if self.schedule == "onecycle" else self.schedule
        position, cycle = self.position(step)
        if position >= cycle - 1:
            self.refuse_warmup_past(step + self.warmup_steps, total_steps)
            self.changes.append([step, 0.0, 1.0, total_steps - step])
            return f"the {name} schedule had ended, so steps {step}..{total_steps - 1} get a new cycle"
        if position < self.warmup_steps:  # the warm-up goes on step by step (its rate is 1) to its planned end
            start = step + math.ceil(self.warmup_steps - position)
            self.refuse_warmup_past(start, total_steps)
            warmup = self.warmup_steps
            self.changes.append([start, float(warmup), (cycle - warmup) / (total_steps - start), cycle])
            return (
                f"the warm-up ends at step {start}, as planned, and what is left of the {name} schedule after it is "
                f"stretched over steps {start}..{total_steps - 1}"
            )
        self.changes.append([step, position, (cycle - position) / (total_steps - step), cycle])
        return f"what was left of the {name} schedule is stretched over steps {step}..{total_steps - 1}"

    def refuse_warmup_past(self, warmup_end: int, total_steps: int) -> None:
        """A warm-up of ``warmup_steps`` must end before a resumed run does (its steps are not squeezed)."""
        if self.warmup_steps and warmup_end >= total_steps:
            raise UserInputError(
                f"the warm-up of {self.warmup_steps} optimizer steps (the schedule's warmup_epochs or warmup_steps) "
                f"would end at step {warmup_end}, and the resumed run ends at step {total_steps}: resume with a "
                "longer run (trainer.max_epochs or max_steps)"
            )
