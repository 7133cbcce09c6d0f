"""A training run's wall-clock budget (``--max-time``).

A run on a CPU stops after 15 minutes by default (a GPU has no default limit): training ends at
the last step that still leaves time for the final dev evaluation and the save, that step is
evaluated and saved, and the best checkpoint is kept as always. The budget counts from the
start of ``cormorant train``, so mining, teacher scoring and the first dev evaluation spend it
too. ``--max-time 0`` removes it; ``--max-steps`` without ``--max-time`` asks for an exact run
length, so it removes the default too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

from cormorant.training.config import TrainConfig

log = logging.getLogger(__name__)
CPU_DEFAULT_MINUTES = 15.0
# Writing the model folder and the training records after the Trainer returns; also what a
# checkpoint save is taken to cost until one has been timed.
WRITE_RESERVE_S = 15.0
# Until a dev evaluation has been timed (a cross-encoder's or generator's first, or any after
# --resume), this share of the budget is kept for the final one.
UNTIMED_EVALUATION_SHARE = 0.1
RECENT_STEPS = 10  # the next step's time is the mean of this many last ones


def budget_minutes(config: TrainConfig, device: str) -> float | None:
    """The run's budget in minutes, None for no limit.

    Example:
        >>> from pathlib import Path
        >>> budget_minutes(TrainConfig(dataset=Path("d"), out=Path("o")), "cpu")
        15.0
        >>> budget_minutes(TrainConfig(dataset=Path("d"), out=Path("o")), "cuda") is None
        True
    """
    if config.max_time is not None:
        return config.max_time or None
    if device != "cpu" or config.max_steps > 0:
        return None
    return CPU_DEFAULT_MINUTES


@dataclass
class Deadline:
    """When a run (or one stage of it) must be done: a ``time.monotonic()`` value, or None.

    Example:
        >>> Deadline(None, None).seconds_left() is None
        True
    """

    at: float | None
    minutes: float | None

    @classmethod
    def start(cls, config: TrainConfig, device: str) -> Deadline:
        """The budget counted from now."""
        minutes = budget_minutes(config, device)
        return cls(None if minutes is None else time.monotonic() + minutes * 60, minutes)

    def seconds_left(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def share(self, parts: int) -> Deadline:
        """The first of ``parts`` equal shares of the time left (one stage of ``star+adore``)."""
        left = self.seconds_left()
        if left is None or parts <= 1:
            return self
        seconds = max(0.0, left) / parts
        return Deadline(time.monotonic() + seconds, round(seconds / 60, 2))

    def callback(self, evaluation_seconds: float = 0.0) -> TimeBudget | None:
        """The Trainer callback that keeps to this deadline; None without one."""
        return None if self.at is None else TimeBudget(self, evaluation_seconds)


class TimeBudget(TrainerCallback):
    """Stops the Trainer at the last step that fits before the deadline, keeping time for one
    more dev evaluation, a checkpoint save and writing the model (each the longest seen so far;
    before one is seen, a tenth of the budget for the evaluation and ``WRITE_RESERVE_S`` for
    the save). The step it stops at is evaluated and saved, so the best checkpoint is chosen
    as usual. Under ``torchrun`` the processes agree: all stop when one would.

    Example:
        >>> budget = Deadline.start(config, "cpu").callback()  # doctest: +SKIP
        >>> trainer = SentenceTransformerTrainer(..., callbacks=[budget])  # doctest: +SKIP
    """

    def __init__(self, deadline: Deadline, evaluation_seconds: float = 0.0,
                 clock: Any = time.monotonic) -> None:
        self.deadline, self.clock = deadline, clock
        self.evaluation_s: float | None = evaluation_seconds or None  # None: not timed yet
        self.save_s: float | None = None
        self.step_s: list[float] = []
        self.stopped_at: int | None = None
        self.planned: int | None = None
        self._ready = clock()  # when the next step's work (loading its batch) begins

    def record(self) -> dict[str, Any]:
        """What ``summary.json`` keeps of the budget."""
        return {"minutes": self.deadline.minutes, "stopped_at_step": self.stopped_at,
                "planned_steps": self.planned}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.planned = state.max_steps
        self._ready = self.clock()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self.clock()
        self.step_s.append(now - self._ready)  # the batch's loading and collation included
        self._ready = now
        if state.global_step >= state.max_steps or self.stopped_at is not None:
            return
        recent = self.step_s[-RECENT_STEPS:]
        evaluation = self._evaluation_reserve(args)
        save = WRITE_RESERVE_S if self.save_s is None else self.save_s
        # An evaluation or save the Trainer has scheduled after this step comes first.
        scheduled = (evaluation if control.should_evaluate else 0.0) \
            + (save if control.should_save else 0.0)
        needed = scheduled + sum(recent) / len(recent) + evaluation + save + WRITE_RESERVE_S
        if not _any_process(now + needed > self.deadline.at, args):
            return
        self.stopped_at = state.global_step
        control.should_training_stop = True
        control.should_save = True
        control.should_evaluate = args.eval_strategy != "no"
        log.warning("time budget: stopping after step %d of %d to finish within %g minutes"
                    " (--max-time 0 removes the limit)", state.global_step, state.max_steps,
                    self.deadline.minutes)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self.clock()
        self.evaluation_s = max(self.evaluation_s or 0.0, now - self._ready)
        self._ready = now  # a save that follows is timed from here

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self.clock()
        self.save_s = max(self.save_s or 0.0, now - self._ready)
        self._ready = now

    def _evaluation_reserve(self, args: Any) -> float:
        if args.eval_strategy == "no":
            return 0.0
        if self.evaluation_s is not None:
            return self.evaluation_s
        return UNTIMED_EVALUATION_SHARE * (self.deadline.minutes or 0.0) * 60


def _any_process(stop: bool, args: Any) -> bool:
    """``stop`` agreed across torchrun's processes (true if any says so), so none waits for
    the others in a gather they will not join."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return stop
    flag = torch.tensor([int(stop)], device=args.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def planned_if_stopped(budget: TimeBudget | None) -> int | None:
    """The steps the run had planned, when the budget stopped it early; else None."""
    return budget.planned if budget is not None and budget.stopped_at is not None else None


def budget_record(budget: TimeBudget | None) -> dict[str, Any] | None:
    """``summary.json``'s ``time_budget``: None when the run had no limit."""
    return budget.record() if budget is not None else None
