"""The time budget (``--max-time``): where a run stops, what it keeps, and its defaults."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cormorant.training.budget import (
    CPU_DEFAULT_MINUTES,
    WRITE_RESERVE_S,
    Deadline,
    TimeBudget,
    budget_minutes,
)
from cormorant.training.config import TrainConfig
from tests.test_training import config, train_dir  # noqa: F401  (the module's fixture)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def control() -> SimpleNamespace:
    return SimpleNamespace(should_training_stop=False, should_save=False, should_evaluate=False)


def run_steps(budget: TimeBudget, clock: FakeClock, step_s: float, max_steps: int,
              evaluate_every: int | None = None, evaluation_s: float = 20.0) -> SimpleNamespace:
    """Drive the callback as the Trainer does, each step taking ``step_s`` seconds and each
    evaluation ``evaluation_s``."""
    args = SimpleNamespace(eval_strategy="steps", device="cpu")
    state = SimpleNamespace(global_step=0, max_steps=max_steps)
    budget.on_train_begin(args, state, control())
    flags = control()
    while state.global_step < max_steps:
        flags = control()
        clock.now += step_s
        state.global_step += 1
        flags.should_evaluate = bool(evaluate_every) and state.global_step % evaluate_every == 0
        budget.on_step_end(args, state, flags)
        if flags.should_evaluate:
            clock.now += evaluation_s
            budget.on_evaluate(args, state, flags)
        if flags.should_training_stop:
            break
    return SimpleNamespace(steps=state.global_step, flags=flags)


def test_budget_stops_at_the_last_step_that_leaves_time_to_evaluate_and_write() -> None:
    clock = FakeClock()
    budget = TimeBudget(Deadline(at=100.0, minutes=100 / 60), evaluation_seconds=20.0,
                        clock=clock)
    done = run_steps(budget, clock, step_s=10.0, max_steps=50)
    # After step k (at 10k s): one more step, the evaluation, a save (not timed yet: taken as
    # WRITE_RESERVE_S) and the write need 10 + 20 + 15 + 15 s. Step 4 ends at 40 s (100 fits);
    # step 5 at 50 s (110 does not).
    need = 10 + 20 + 2 * WRITE_RESERVE_S
    assert 50 + need > 100 >= 40 + need
    assert done.steps == 5 and budget.stopped_at == 5
    assert done.flags.should_training_stop and done.flags.should_evaluate and done.flags.should_save
    assert budget.record() == {"minutes": pytest.approx(100 / 60), "stopped_at_step": 5,
                               "planned_steps": 50}


def test_an_untimed_evaluation_keeps_a_tenth_of_the_budget_until_one_is_timed() -> None:
    untimed = TimeBudget(Deadline(at=900.0, minutes=15.0), clock=(clock := FakeClock()))
    # 10 + 90 (a tenth of 15 minutes) + 15 + 15 s: step 77 ends at 770 s (900 fits), 78 not.
    assert run_steps(untimed, clock, step_s=10.0, max_steps=500).steps == 78
    timed = TimeBudget(Deadline(at=900.0, minutes=15.0), clock=(clock := FakeClock()))
    # Evaluations every 20 steps take 5 s: from step 20 on, 5 s is kept instead of 90.
    done = run_steps(timed, clock, step_s=10.0, max_steps=500, evaluate_every=20,
                     evaluation_s=5.0)
    assert timed.evaluation_s == 5.0 and done.steps == 84


def test_budget_counts_an_evaluation_the_trainer_scheduled_after_this_step() -> None:
    clock = FakeClock()
    budget = TimeBudget(Deadline(at=100.0, minutes=1.0), evaluation_seconds=20.0, clock=clock)
    # Step 3 ends at 30 s: 30 + 10 + 20 + 15 + 15 = 90 fits. Step 4 ends at 40 s with an
    # evaluation due, which comes first: 40 + 20 + 10 + 20 + 15 + 15 = 120 does not.
    done = run_steps(budget, clock, step_s=10.0, max_steps=50, evaluate_every=4)
    assert done.steps == 4


def test_budget_never_stops_a_run_that_fits_or_that_is_at_its_last_step() -> None:
    clock = FakeClock()
    budget = TimeBudget(Deadline(at=1000.0, minutes=1.0), clock=clock)
    assert run_steps(budget, clock, step_s=1.0, max_steps=20).steps == 20
    assert budget.stopped_at is None and budget.record()["stopped_at_step"] is None
    late = TimeBudget(Deadline(at=-1.0, minutes=1.0), clock=FakeClock())
    assert run_steps(late, FakeClock(), step_s=1.0, max_steps=1).steps == 1
    assert late.stopped_at is None  # the one planned step ran: nothing was cut


def test_default_budget_is_fifteen_minutes_on_a_cpu_and_none_on_a_gpu() -> None:
    def conf(**changes: object) -> TrainConfig:
        return TrainConfig(dataset=Path("d"), out=Path("o"), **changes)

    assert budget_minutes(conf(), "cpu") == CPU_DEFAULT_MINUTES == 15.0
    assert budget_minutes(conf(), "cuda") is None
    assert budget_minutes(conf(max_time=0), "cpu") is None
    assert budget_minutes(conf(max_steps=500), "cpu") is None  # an exact length was asked for
    assert budget_minutes(conf(max_steps=500, max_time=5), "cpu") == 5
    assert budget_minutes(conf(max_time=2.5), "cuda") == 2.5


def test_a_stage_of_a_chained_run_gets_its_share_of_the_time_left() -> None:
    deadline = Deadline.start(TrainConfig(dataset=Path("d"), out=Path("o"), max_time=10), "cpu")
    first = deadline.share(2)
    assert first.seconds_left() == pytest.approx(300, abs=5) and first.minutes == 5
    assert deadline.seconds_left() == pytest.approx(600, abs=5)
    assert Deadline(None, None).share(2).at is None


@pytest.mark.parametrize("kind, negatives", [("bi-encoder", "in-batch"),
                                             ("cross-encoder", "bm25")])
def test_a_run_past_its_budget_stops_after_one_step_and_still_writes_the_best_model(
        train_dir, tiny_encoder, tmp_path, kind, negatives) -> None:  # noqa: F811
    from cormorant.training.trainer import train

    # A budget of a few milliseconds is spent before training starts: one step runs, is
    # evaluated and saved, and the model folder is complete.
    result = train(config(train_dir, tmp_path / "m", tiny_encoder, kind=kind,
                          negatives=negatives, epochs=10, max_time=1e-4))
    assert result.steps == 1 and result.planned_steps is not None and result.planned_steps > 10
    summary = json.loads((result.out / "training" / "summary.json").read_text())
    assert summary["time_budget"] == {"minutes": 1e-4, "stopped_at_step": 1,
                                      "planned_steps": result.planned_steps}
    assert [step for step, _ in result.dev_history][-1] == 1  # the last step was evaluated
    assert (result.out / "model.safetensors").is_file()
    assert not (tmp_path / "m.work").exists()


def test_no_limit_trains_every_planned_step(train_dir, tiny_encoder, tmp_path) -> None:  # noqa: F811
    from cormorant.training.trainer import train

    result = train(config(train_dir, tmp_path / "m", tiny_encoder, epochs=2, max_time=0))
    assert result.planned_steps is None and result.steps >= 8
    summary = json.loads((result.out / "training" / "summary.json").read_text())
    assert summary["time_budget"] is None
