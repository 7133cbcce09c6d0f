"""``cormorant train``: the one driver every kind of model runs through.

:func:`train` starts the time budget, checks ``--out``, splits off the dev queries, and hands a
:class:`Session` to the kind named by ``--kind`` (looked up in
:data:`cormorant.training.kinds.KINDS`). A kind (:class:`TrainingKind`) loads its model and
builds its rows, loss and evaluator into a :class:`Job`; :func:`fit` then runs the same
sequence for every kind: the CSV log, the Trainer with the budget, ``--resume``, keeping the
best dev checkpoint, and writing a normal model folder atomically.

Layout while training: ``OUT.work/`` holds checkpoints, logs (CSV and TensorBoard) and mined
negatives, so ``--resume`` can pick up after a crash; ``OUT`` appears only when the model is
complete (written to a temporary directory and renamed), with the logs under ``OUT/training/``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainerCallback

from cormorant.errors import CormorantError
from cormorant.index.format import atomic_directory
from cormorant.retrieval.encoders import TRAINING_RECORDS
from cormorant.training.budget import Deadline, budget_record, planned_if_stopped
from cormorant.training.config import TrainConfig
from cormorant.training.data import TrainingSet
from cormorant.training.evaluation import DevEvaluator
from cormorant.training.kinds import training_kind
from cormorant.training.negatives import Negatives
from cormorant.types import Corpus

log = logging.getLogger(__name__)
ROLE_FILE = "cormorant.json"
"""Written beside a query-only model (ADORE, distill-query): where its document encoder is."""
DOCUMENT_ENCODER = "document_encoder"


@dataclass
class TrainResult:
    out: Path
    seconds: float
    steps: int
    dev_history: list[tuple[int, float]]
    losses: list[float]
    best_dev_loss: float | None = None  # --kind seal selects by dev loss, not nDCG@10
    planned_steps: int | None = None  # set when the time budget stopped the run early


def work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".work")


def distributed_state() -> Any | None:
    """accelerate's state of the process group when ``torchrun`` started several processes
    (one per GPU); None for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState()


def is_main_process() -> bool:
    """True unless this is one of ``torchrun``'s other ranks (which write and print nothing)."""
    state = distributed_state()
    return state is None or state.is_main_process


def refuse_clobber(config: TrainConfig) -> None:
    """Refuse an existing ``--out`` without ``--overwrite``, before any work."""
    if config.out.exists() and not config.overwrite:
        raise CormorantError(f"{config.out} already exists (use --overwrite to replace it)")


def prepare_out(config: TrainConfig) -> Path:
    """Leave a resumable work dir beside ``--out`` (called after :func:`refuse_clobber` and
    the data have been checked, so bad input leaves none). Under ``torchrun`` only the main
    process clears it, and the others wait for it."""
    work = work_dir(config.out)
    state = distributed_state()
    if state is None or state.is_main_process:
        if work.exists() and not config.resume:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
    if state is not None:
        state.wait_for_everyone()
    return work


def remove_if_empty(work: Path) -> None:
    """Remove a work dir that holds no file (only folders a kind made while setting up);
    one with mined negatives or checkpoints stays, for ``--resume``."""
    if is_main_process() and work.is_dir() and not any(p.is_file() for p in work.rglob("*")):
        shutil.rmtree(work, ignore_errors=True)


def split_dev(config: TrainConfig) -> tuple[TrainingSet, TrainingSet | None]:
    """Training queries and dev queries: a named dev split, or a seeded share of train;
    pseudo-queries and no dev set with ``--unsupervised``."""
    from cormorant.data import DatasetSpec

    ds = DatasetSpec(config.dataset).load()
    if config.unsupervised:  # GPL: the corpus alone, no labels, so no dev set
        return pseudo_training_set(config, ds.corpus), None
    data = TrainingSet.from_dataset(ds, config.split)
    if config.dev_split:
        return data, TrainingSet.from_dataset(ds, config.dev_split)
    if config.dev_fraction == 0:
        return data, None
    return data.hold_out(config.dev_fraction, config.seed)


def pseudo_training_set(config: TrainConfig, corpus: Corpus) -> TrainingSet:
    """``--unsupervised``: pseudo-queries for the corpus, each judged relevant to its source
    passage(s), as many as the run's planned GPL tuples use."""
    from cormorant.training.gpl import planned_steps
    from cormorant.training.pseudo_queries import write_pseudo_queries

    tuples = planned_steps(config, hardware(config)["device"]) * config.batch_size
    pseudo = write_pseudo_queries(corpus, config.pseudo_queries, tuples, config.seed,
                                  config.queries_per_passage, config.examples, config.llm)
    return pseudo.training_set(corpus, {d.doc_id: d.contents for d in corpus})


@dataclass
class Session:
    """What the driver hands a kind: the options, the start model, the training and dev
    queries, the work directory and the time budget."""

    config: TrainConfig
    base_model: str
    data: TrainingSet
    dev: TrainingSet | None
    work: Path
    deadline: Deadline


@dataclass
class Outcome:
    """How the Trainer's run went, for the kind's ``summary.json``."""

    seconds: float
    time_budget: dict[str, Any] | None
    kept_start: bool  # no checkpoint beat the starting weights, which were written instead


class Job:
    """One kind's run, set up for :func:`fit`: the model, how its Trainer is built, and what
    is written beside it. A kind's job sets ``model`` and implements :meth:`trainer` and
    :meth:`summary`; the rest has defaults.

    Example:
        >>> class Echo(Job):  # doctest: +SKIP
        ...     def __init__(self, session: Session) -> None:
        ...         self.model = load_model(session.base_model)
        ...     def trainer(self, callbacks): return SentenceTransformerTrainer(..., callbacks=callbacks)
        ...     def summary(self, trainer, outcome): return {"seconds": round(outcome.seconds, 1)}
    """

    model: Any  # what OUT holds: ``model.save(dir)`` writes the folder
    evaluator: DevEvaluator | None = None  # dev nDCG@10, recorded in summary.json
    negatives: Negatives | None = None  # written to OUT/training/negatives.jsonl
    document_encoder: str | None = None  # a query tower's document model, copied into OUT
    # Score the starting weights before training, and write them if no checkpoint beats them.
    evaluates_start: bool = False

    def trainer(self, callbacks: list[TrainerCallback]) -> Any:
        """The Hugging Face Trainer that trains ``model``, with these callbacks."""
        raise NotImplementedError

    def finish(self) -> None:
        """Undo what only training needed (shorter texts, train mode) before the model is
        written."""

    def summary(self, trainer: Any, outcome: Outcome) -> dict[str, Any]:
        """What ``OUT/training/summary.json`` says of the run (the driver adds the config,
        hardware, process count and dev history)."""
        raise NotImplementedError

    def best_dev_loss(self, trainer: Any) -> float | None:
        """The lowest dev loss, for a kind that selects checkpoints by loss; else None."""
        return None


class TrainingKind:
    """A kind of model ``cormorant train --kind`` trains, registered in
    :data:`cormorant.training.kinds.KINDS`. It names its start model (failing on bad names
    before any work) and sets up a :class:`Job`; :meth:`train` runs it through :func:`fit`
    (a kind with several stages, such as ``star+adore``, overrides it).

    Example:
        >>> training_kind("cross-encoder").base_model(config)  # doctest: +SKIP
        '/.../all-MiniLM-L6-v2'
    """

    name: ClassVar[str] = "kind"

    def base_model(self, config: TrainConfig) -> str:
        """The resolved model to start from."""
        raise NotImplementedError

    def setup(self, session: Session) -> Job:
        """Load the model and build the rows, loss and evaluator."""
        raise NotImplementedError

    def train(self, session: Session) -> TrainResult:
        return fit(self.setup(session), session)


def train(config: TrainConfig) -> TrainResult:
    """Train the model ``config.kind`` names and write it to ``config.out``.

    Example:
        >>> train(TrainConfig(dataset="../shared/data/scifact", out="models/star",
        ...                   negatives="star"))  # doctest: +SKIP
        TrainResult(out=PosixPath('models/star'), ...)
    """
    # fp16 asked for on a machine without a GPU: say so before any work
    deadline = Deadline.start(config, hardware(config)["device"])
    if deadline.minutes is not None:
        log.info("time budget: %g minutes for the whole run (--max-time 0 removes it)",
                 deadline.minutes)
    kind = training_kind(config.kind)
    base = kind.base_model(config)
    refuse_clobber(config)
    data, dev = split_dev(config)
    work = prepare_out(config)
    try:
        return kind.train(Session(config, base, data, dev, work, deadline))
    except CormorantError:
        remove_if_empty(work)  # bad input found while setting up: nothing there to resume
        raise


def fit(job: Job, session: Session) -> TrainResult:
    """Train ``job``'s model under the session's budget and write it: the sequence every kind
    shares. The clock starts before the starting point's dev evaluation, which the budget
    then keeps time for at the end."""
    config, work = session.config, session.work
    start = time.perf_counter()
    starting_weights, evaluation_s = None, 0.0
    if job.evaluates_start and job.evaluator is not None and not config.resume:
        job.evaluator(job.model, steps=0)  # the starting point: is training helping?
        evaluation_s = time.perf_counter() - start
        starting_weights = {k: v.detach().clone() for k, v in job.model.state_dict().items()}
    budget = session.deadline.callback(evaluation_s)
    csv_log = CSVLogger(work / "logs" / "train_log.csv")
    trainer = job.trainer(with_budget(csv_log, budget, work))
    quiet_terminal(trainer)
    trainer.train(resume_from_checkpoint=last_checkpoint(work) if config.resume else None)
    seconds = time.perf_counter() - start
    job.finish()
    history = job.evaluator.history if job.evaluator is not None else []
    kept_start = starting_weights is not None and start_was_best(history)
    if kept_start:
        job.model.load_state_dict(starting_weights)
    summary = job.summary(trainer, Outcome(seconds, budget_record(budget), kept_start))
    write_output(config, job.model, work, summary, job.evaluator, job.negatives,
                 job.document_encoder)
    return TrainResult(config.out, seconds, trainer.state.global_step, history, csv_log.values,
                       best_dev_loss=job.best_dev_loss(trainer),
                       planned_steps=planned_if_stopped(budget))


def start_was_best(history: list[tuple[int, float]]) -> bool:
    """True when no checkpoint beat the dev score of the starting weights (step 0): the
    Trainer picks the best among its checkpoints only, and the start is not one of them."""
    start = [value for step, value in history if step == 0]
    later = [value for step, value in history if step != 0]
    if not start or not later or max(later) > start[0]:
        return False
    log.warning("training did not improve dev nDCG@10 (start %.4f, best checkpoint %.4f):"
                " writing the starting weights", start[0], max(later))
    return True


def with_budget(csv_log: CSVLogger, budget: TrainerCallback | None,
                work: Path) -> list[TrainerCallback]:
    """The callbacks every kind's Trainer gets: the CSV log, TensorBoard's (if installed) and
    the time budget (if any)."""
    board = tensorboard_callback(work)
    return [c for c in (csv_log, board, budget) if c is not None]


def training_arguments(cls: Any, config: TrainConfig, work: Path, evaluator: Any, every: int,
                       learning_rate: float, share: float = 1.0, batch_size: int | None = None,
                       best: tuple[str, bool] = ("eval_dev_ndcg@10", True),
                       **extra: Any) -> Any:
    """The Trainer arguments every kind shares: ``share`` of one pass over the rows (they hold
    every epoch: ceil(epochs) passes, so a fractional ``--epochs`` runs part of them),
    evaluation and checkpoints every ``every`` steps keeping the best dev checkpoint by
    ``best`` (metric, greater is better; default dev nDCG@10), CSV and TensorBoard logs, CUDA
    and fp16 when there is a GPU (:func:`hardware`). ``batch_size`` (rows per step) defaults to
    ``config.batch_size``."""
    device = hardware(config)
    return cls(
        output_dir=str(work / "checkpoints"), num_train_epochs=share, max_steps=config.max_steps,
        per_device_train_batch_size=batch_size or config.batch_size, learning_rate=learning_rate,
        warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        fp16=device["precision"] == "fp16", use_cpu=device["device"] == "cpu",
        seed=config.seed, data_seed=config.seed,
        eval_strategy="steps" if evaluator else "no", eval_steps=every,
        save_strategy="steps", save_steps=every, save_total_limit=2,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model=best[0] if evaluator else None,
        greater_is_better=best[1], logging_steps=log_every(every, config.max_steps),
        # TensorBoard comes as a callback with its folder (tensorboard_callback), not through
        # report_to, whose callback reads the folder from the process environment only.
        report_to=[], disable_tqdm=False, **extra)


def hardware(config: TrainConfig) -> dict[str, Any]:
    """Where training runs and in which precision: the GPU(s) with fp16 autocast when CUDA is
    present (``fp16: false`` keeps fp32), else the CPU in fp32. Recorded in ``summary.json``.

    Example:
        >>> hardware(TrainConfig(dataset=Path("d"), out=Path("o"), fp16=False))["precision"]
        'fp32'
    """
    import torch

    if torch.cuda.is_available():
        found = {"device": "cuda", "gpu": torch.cuda.get_device_name(0),
                 "gpus": torch.cuda.device_count(),
                 "precision": "fp32" if config.fp16 is False else "fp16",
                 # this process's peak so far (at the end of training: its training peak)
                 "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20)}
    elif config.fp16:
        raise CormorantError("fp16: true needs a CUDA GPU, and this machine has none"
                             " (leave fp16 unset: a GPU then trains in fp16, a CPU in fp32)")
    else:
        found = {"device": "cpu", "precision": "fp32", "gpus": 0}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # under torchrun: nccl on GPUs, gloo on CPUs. A group made without naming a backend
        # reports "undefined" here; its per-device config says what it uses.
        backend = torch.distributed.get_backend()
        found["backend"] = backend if backend != "undefined" \
            else torch.distributed.get_backend_config()
    return found


def log_every(eval_steps: int, max_steps: int) -> int:
    """About four loss records per evaluation, at most every 10 steps."""
    limit = max_steps // 4 if max_steps > 0 else 10
    return max(1, min(10, eval_steps // 4, limit))


def tensorboard_callback(work: Path) -> TrainerCallback | None:
    """TensorBoard logs under ``work/logs/tensorboard``, or None (with a warning) when the
    package is missing. The folder is set on the callback: transformers' own route is the
    ``TENSORBOARD_LOGGING_DIR`` variable, which would change the environment of the process.
    Its writer opens on the main process's first step, as with ``report_to``."""
    try:
        import tensorboard  # noqa: F401
    except ModuleNotFoundError:
        log.warning("tensorboard is not installed: logging to CSV only")
        return None
    from transformers.integrations import TensorBoardCallback

    board = TensorBoardCallback()
    board.logging_dir = str(work / "logs" / "tensorboard")
    return board


def last_checkpoint(work: Path) -> str | None:
    """The newest Trainer checkpoint under ``work`` (what ``--resume`` continues from), or
    None with a warning when there is none."""
    checkpoints = sorted((work / "checkpoints").glob("checkpoint-*"),
                         key=lambda p: int(p.name.split("-")[1]))
    if not checkpoints:
        log.warning("--resume: no checkpoint under %s; starting from the beginning", work)
        return None
    return str(checkpoints[-1])


def write_output(config: TrainConfig, model: Any, work: Path, summary: dict[str, Any],
                 evaluator: DevEvaluator | None, negatives: Any = None,
                 document_encoder: str | None = None) -> None:
    """Write the model, its document tower (for a query tower) and the training records into
    ``config.out`` atomically, then drop the work directory. Under ``torchrun`` the main
    process writes, once every process is done with the checkpoints."""
    state = distributed_state()
    if state is not None:
        state.wait_for_everyone()
        if not state.is_main_process:
            return
    summary = {**summary, "processes": state.num_processes if state is not None else 1,
               "hardware": hardware(config)}
    with atomic_directory(config.out, overwrite=True) as tmp:
        model.save(str(tmp))
        if document_encoder:
            shutil.copytree(document_encoder, tmp / DOCUMENT_ENCODER,
                            ignore=shutil.ignore_patterns("*.work", TRAINING_RECORDS))
            (tmp / ROLE_FILE).write_text(json.dumps(
                {"role": "query-encoder", "document_encoder": DOCUMENT_ENCODER}, indent=2))
        records = tmp / TRAINING_RECORDS
        records.mkdir()
        if (work / "logs").is_dir():
            shutil.copytree(work / "logs", records / "logs")
        if negatives is not None:
            negatives.save(records / "negatives.jsonl")
        summary = {**summary, "config": config.to_dict(),
                   "dev_ndcg@10": evaluator.history if evaluator else []}
        (records / "summary.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def quiet_terminal(trainer: Any) -> None:
    """Unless ``-v``: the Trainer's bar without the raw log dicts it prints under it, and one
    line per dev evaluation (:class:`EvaluationLine`) instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from cormorant.console import verbose

    if verbose():
        return
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgress())
    trainer.add_callback(EvaluationLine())


class QuietProgress(TrainerCallback):
    """transformers' progress bar, minus the ``{'loss': ..., 'grad_norm': ...}`` lines."""

    def __init__(self) -> None:
        from transformers.trainer_callback import ProgressCallback

        self._bar = ProgressCallback()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._bar.on_train_begin(args, state, control, **kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._bar.on_step_end(args, state, control, **kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._bar.on_train_end(args, state, control, **kwargs)


class EvaluationLine(TrainerCallback):
    """One line per dev evaluation: ``step 200/1000  dev nDCG@10 0.6521 (best 0.6610)  loss
    0.2130``, on stderr."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}
        self.loss: float | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_evaluate(self, args: Any, state: Any, control: Any,
                    metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        import sys

        from tqdm import tqdm

        parts = []
        for key, value in (metrics or {}).items():
            if not key.startswith("eval_") or key.endswith(("_runtime", "_per_second", "epoch")):
                continue
            name = key.removeprefix("eval_").replace("dev_ndcg@10", "dev nDCG@10").replace("_", " ")
            lower = "loss" in key
            best = min(self.best.get(key, value), value) if lower else max(self.best.get(key, value), value)
            self.best[key] = best
            parts.append(f"{name} {value:.4f} (best {best:.4f})")
        loss = f"  train loss {self.loss:.4f}" if self.loss is not None else ""
        # tqdm.write: the line goes above the training bar instead of after its last frame.
        tqdm.write(f"step {state.global_step}/{state.max_steps}  " + "  ".join(parts) + loss,
                   file=sys.stderr)


class CSVLogger(TrainerCallback):
    """Writes every logged value (loss, learning rate, dev nDCG) to a CSV file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: list[float] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not logs:
            return
        if "loss" in logs:
            self.values.append(float(logs["loss"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "epoch", "name", "value"])
            for key, value in logs.items():
                if isinstance(value, int | float):
                    writer.writerow([state.global_step, round(state.epoch or 0, 4), key, value])
