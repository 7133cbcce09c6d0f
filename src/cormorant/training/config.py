"""Training arguments as one dataclass (Tevatron style): from the CLI or a YAML/JSON file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from cormorant.errors import CormorantError

KINDS = ("bi-encoder", "cross-encoder", "seal")
CROSS_ENCODER_LOSSES = ("bce", "listwise")
LEARNING_RATE = 2e-5
CROSS_ENCODER_LEARNING_RATE = 7e-5


@dataclass
class TrainConfig:
    """Everything a ``cormorant train`` run reads. Defaults fit a 2-core CPU: one epoch,
    batch 32, documents cut to 128 tokens while training, and at most 15 minutes on a CPU
    (``max_time``, see :mod:`cormorant.training.budget`).

    Example:
        >>> TrainConfig(dataset=Path("data/scifact"), out=Path("models/star"), negatives="star").kind
        'bi-encoder'
    """

    dataset: Path
    out: Path
    negatives: str = "in-batch"
    kind: str = "bi-encoder"
    split: str = "train"
    base_model: str | None = None
    negatives_file: Path | None = None
    epochs: float = 1.0
    max_steps: int = -1
    # Wall-clock minutes for the whole run; None: 15 on a CPU unless max_steps is set, no limit
    # on a GPU; 0: no limit.
    max_time: float | None = None
    batch_size: int = 32
    learning_rate: float | None = None  # per kind: see peak_learning_rate
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    scale: float = 20.0
    seed: int = 42
    # Negatives: how many are mined per query, from how deep, with which filters.
    num_negatives: int = 8
    range_min: int = 0
    range_max: int | None = None
    relative_margin: float | None = None
    absolute_margin: float | None = None
    mining_model: str | None = None
    mining_cross_encoder: str | None = None
    # STAR / ADORE
    star_pool: int = 200
    adore_top_k: int = 200
    metric_cut: int | None = 200
    document_model: str | None = None
    # TAS-Balanced
    teacher: str | None = None
    inbatch_teacher: str | None = None
    inbatch_weight: float = 0.75
    clusters: int | None = None
    tas_candidates: str = "bm25"
    # cross-encoder: the fresh scoring head learns faster than the pre-trained body
    head_learning_rate: float = 1e-3
    cross_encoder_loss: str = "listwise"
    cross_encoder_mined: int = 3  # mined negatives per query and epoch (listwise and bce)
    cross_encoder_in_batch: int = 4  # listwise: other queries' documents in each group
    # distill-query: query-only steps are ~20x cheaper than pair steps, so it runs longer
    student: str | None = None
    student_layers: int = 3
    distill_epochs: int = 2
    distill_learning_rate: float = 1e-4
    distill_titles: bool = True
    # seal: queries written by `cormorant data synth-queries` add pairs for their documents
    synthetic_queries: Path | None = None
    # in-batch
    cached: bool = False
    mini_batch_size: int = 16
    # Dev evaluation and checkpoints
    dev_split: str | None = None
    dev_fraction: float = 0.1
    dev_candidates: int = 10
    eval_steps: int | None = None
    resume: bool = False
    overwrite: bool = False
    fp16: bool | None = None

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> TrainConfig:
        """Options from YAML or JSON; ``overrides`` (set on the command line) win."""
        if not path.is_file():
            raise CormorantError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") \
                else json.loads(path.read_text())
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise CormorantError(f"cannot read config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise CormorantError(f"config {path} must be a mapping of option names to values")
        raw = {k.replace("-", "_"): v for k, v in raw.items()}
        return cls.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise CormorantError(f"unknown training option(s): {', '.join(unknown)}")
        for required in ("dataset", "out"):
            if raw.get(required) is None:
                raise CormorantError(f"training needs --{required} (or '{required}:' in the config)")
        values = {k: (Path(v) if k in ("dataset", "out", "negatives_file", "synthetic_queries")
                      and v is not None
                      else v) for k, v in raw.items()}
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise CormorantError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        checks = [(self.batch_size >= 2, "--batch-size must be at least 2 (in-batch negatives)"),
                  (self.epochs > 0, "--epochs must be positive"),
                  (self.max_time is None or self.max_time >= 0,
                   "--max-time must be 0 (no limit) or a positive number of minutes"),
                  (self.peak_learning_rate > 0, "--learning-rate must be positive"),
                  (self.head_learning_rate > 0, "head_learning_rate must be positive"),
                  (self.cross_encoder_loss in CROSS_ENCODER_LOSSES,
                   f"cross_encoder_loss must be one of {', '.join(CROSS_ENCODER_LOSSES)}"),
                  (0 <= self.dev_fraction < 1, "--dev-fraction must be in [0, 1)"),
                  (self.num_negatives >= 1, "--num-negatives must be at least 1"),
                  (self.cross_encoder_mined >= 1, "cross_encoder_mined must be at least 1"),
                  (self.cross_encoder_in_batch >= 0, "cross_encoder_in_batch must be 0 or more"),
                  (self.max_length >= 8, "--max-length must be at least 8 tokens"),
                  (self.student_layers >= 1, "--student-layers must be at least 1"),
                  (self.synthetic_queries is None or self.kind == "seal",
                   "--synthetic-queries is for --kind seal (a bi-encoder trains on the folder"
                   " itself: --dataset SYNTH_DIR)")]
        for ok, message in checks:
            if not ok:
                raise CormorantError(message)

    @property
    def peak_learning_rate(self) -> float:
        """``learning_rate``, or the kind's default: 2e-5 for a bi-encoder (and a seal
        generator), 7e-5 for a cross-encoder, whose body must learn to read pairs."""
        if self.learning_rate is not None:
            return self.learning_rate
        return CROSS_ENCODER_LEARNING_RATE if self.kind == "cross-encoder" else LEARNING_RATE

    def to_dict(self) -> dict[str, Any]:
        """Every option as JSON values, the learning rate resolved to the one used."""
        values = {k: (str(v) if isinstance(v, Path) else v)
                  for k, v in dataclasses.asdict(self).items()}
        return {**values, "learning_rate": self.peak_learning_rate}
