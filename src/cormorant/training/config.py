"""Training arguments as one dataclass (Tevatron style): from the CLI or a YAML/JSON file.

Each option is declared once, as a field made by :func:`~cormorant.training.options.option`:
its type, default, one-line help, whether ``cormorant train`` has it as a flag, and the rule
its value must meet. The command line, the conversion of paths, and the checks with their
one-line errors all come from that declaration.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from cormorant.errors import CormorantError
from cormorant.fusion import NORMS
from cormorant.training.kinds import KINDS
from cormorant.training.options import POSITIVE, Rule, at_least, checked, one_of, option

CROSS_ENCODER_LOSSES = ("bce", "listwise")
LEARNING_RATE = 2e-5
CROSS_ENCODER_LEARNING_RATE = 7e-5
# Strategies that train against --teacher's margins (Margin-MSE).
TEACHER_STRATEGIES = ("random", "bm25", "dense", "tas-balanced", "gpl")
STRATEGIES_HELP = ("Strategy: in-batch, random, bm25, dense (hard negatives), star, adore,"
                   " star+adore, tas-balanced, distill-query, gpl.")
PSEUDO_QUERIES = ("span", "title", "lm")


# adore's steps encode only queries against a fixed document index (~20 s an epoch on SciFact
# on 2 cores against ~4-7 min for a pair strategy), and one pass is far from converged: on
# SciFact dev nDCG@10 still rose at epoch 9 of 10 (0.774 -> 0.831), test 0.670 after 1 epoch,
# 0.712 after 10 (docs/training.md).
ADORE_EPOCHS = 10.0
# late-interaction: SciFact's one epoch is 26 steps; three (13 min on 2 cores) took the
# trained model past untrained chamfer (0.721 against 0.712), one at a random start did not.
LATE_INTERACTION_EPOCHS = 3.0


def default_epochs(negatives: str, kind: str = "bi-encoder") -> float:
    """Passes when ``--epochs`` is not given: 1, :data:`ADORE_EPOCHS` for ``adore``,
    :data:`LATE_INTERACTION_EPOCHS` for ``--kind late-interaction``.

    Example:
        >>> default_epochs("bm25"), default_epochs("adore")
        (1.0, 10.0)
        >>> default_epochs("in-batch", "late-interaction")
        3.0
    """
    if kind == "late-interaction":
        return LATE_INTERACTION_EPOCHS
    return ADORE_EPOCHS if negatives == "adore" and kind == "bi-encoder" else 1.0


@dataclass
class TrainConfig:
    """Everything a ``cormorant train`` run reads. Defaults fit a 2-core CPU: one epoch,
    batch 32, documents cut to 128 tokens while training, and at most 15 minutes on a CPU
    (``max_time``, see :mod:`cormorant.training.budget`). Values are converted and checked
    when the config is made: a bad one raises a one-line CormorantError.

    Example:
        >>> TrainConfig(dataset="data/scifact", out="models/star", negatives="star").out
        PosixPath('models/star')
        >>> TrainConfig(dataset="d", out="o", batch_size=1)
        Traceback (most recent call last):
        cormorant.errors.CormorantError: --batch-size must be at least 2 (in-batch negatives)
    """

    dataset: Path = option(help="BEIR-style dataset folder.", cli=True, short="-d")
    out: Path = option(help="Model folder to write (a sentence-transformers model).", cli=True,
                       short="-o")
    negatives: str = option("in-batch", help=STRATEGIES_HELP, cli=True, short="-n")
    kind: str = option("bi-encoder", cli=True, rule=one_of(*KINDS), help=(
        "bi-encoder, cross-encoder, seal (a generator for the seal stage; default base"
        " model: SmolLM2-135M-Instruct), tildev2 (token weights for the tildev2 stage), or"
        " late-interaction (a ColBERT model for chamfer and muvera)."))
    split: str = option("train", help="Training split.", cli=True)
    base_model: str | None = option(None, cli=True, help=(
        "Model to start from (default: all-MiniLM-L6-v2; for --kind seal,"
        " SmolLM2-135M-Instruct)."))
    negatives_file: Path | None = option(None, cli=True, help=(
        "Negatives JSONL from 'cormorant data negatives' (instead of mining)."))
    epochs: float | None = option(None, cli=True, rule=POSITIVE, help=(
        "Passes over the training queries; a fraction trains that share of a pass (default:"
        " 1; adore 10, its steps encode queries only; --kind late-interaction 3)."))
    max_steps: int = option(-1, help="Stop after this many steps (-1: no limit).", cli=True)
    max_time: float | None = option(None, cli=True, rule=Rule(
        lambda minutes: minutes >= 0, "must be 0 (no limit) or a positive number of minutes"),
        help=("Minutes the whole run may take; training stops at the last step that fits and"
              " keeps the best checkpoint (default: 15 on a CPU unless --max-steps is given,"
              " no limit on a GPU; 0: no limit)."))
    batch_size: int = option(32, help="Queries per batch.", cli=True,
                             rule=at_least(2, " (in-batch negatives)"))
    learning_rate: float | None = option(None, cli=True, rule=POSITIVE, help=(
        "Peak learning rate (default: 2e-5; cross-encoder 7e-5)."))
    warmup_ratio: float = option(0.1, help="Share of the steps the learning rate warms up over.")
    weight_decay: float = option(0.01, help="AdamW weight decay.")
    max_length: int = option(128, cli=True, rule=at_least(8, " tokens"), help=(
        "Tokens per text while training; the saved model keeps its own length."))
    scale: float = option(20.0, help="Multiplier of cosine scores in the losses.")
    seed: int = option(42, help="Seed for sampling and initialisation.", cli=True)
    # Negatives: how many are mined per query, from how deep, with which filters.
    num_negatives: int = option(8, help="Negatives mined per query.", rule=at_least(1))
    range_min: int = option(0, help="Mining: skip this many best surviving candidates.")
    range_max: int | None = option(None, help="Mining: how deep the retriever is read.")
    relative_margin: float | None = option(None, help=(
        "Mining: drop candidates scoring above (1 - r) x the weakest positive."))
    absolute_margin: float | None = option(None, help=(
        "Mining: drop candidates scoring above the weakest positive minus a."))
    mining_model: str | None = option(None, help="Mining: the dense model (default: base).")
    mining_cross_encoder: str | None = option(None, help=(
        "Mining: a cross-encoder that re-scores candidates before the margins."))
    # STAR / ADORE
    star_pool: int = option(200, help="star: static hard negatives per query.")
    adore_top_k: int = option(200, help="adore: documents retrieved per query at each step.")
    metric_cut: int | None = option(200, help="adore: ranks beyond this count as 0.")
    document_model: str | None = option(None, cli=True, help=(
        "adore: the model whose fixed document index queries train against."))
    # TAS-Balanced
    teacher: str | None = option(None, cli=True, help=(
        "Margin-MSE teacher for tas-balanced, gpl and the hard-negative strategies (random,"
        " bm25, dense), and the judge of --denoise: a cross-encoder folder, a bi-encoder folder,"
        " a scores file, or a pipeline such as 'rrf(bm25, chamfer)' (an existing path wins;"
        " gpl's default: the base model); late-interaction distils from it (KL)."))
    teacher_norm: str = option("auto", rule=one_of("auto", *NORMS), help=(
        "Per-query scaling of teacher scores before margins (auto: minmax for a pipeline"
        " teacher, none for the others)."))
    teacher_range: float = option(7.5, rule=POSITIVE, help=(
        "Scaled teacher scores are multiplied by this: the base student's mean score range"
        " over a query's candidates (20 x cosine)."))
    denoise: bool = option(False, cli=True, help=(
        "Drop mined negatives that --teacher scores near or above the query's weakest positive"
        " (likely unjudged positives; RocketQA); the share dropped goes into summary.json."))
    denoise_margin: float = option(0.05, cli=True, rule=Rule(
        lambda r: 0 <= r < 1, "must be in [0, 1)"), help=(
        "--denoise drops a negative whose teacher score, min-max scaled per query, exceeds"
        " (1 - this) x the weakest positive's."))
    inbatch_teacher: str | None = option(None, help=(
        "tas-balanced: bi-encoder teacher of the in-batch margins (default: base)."))
    inbatch_weight: float = option(0.75, help="tas-balanced: weight of the in-batch loss.")
    clusters: int | None = option(None, help=(
        "tas-balanced: query clusters (default: one per 4 batches of queries)."))
    tas_candidates: str = option("bm25", help="tas-balanced: how candidates are mined.")
    # cross-encoder: the fresh scoring head learns faster than the pre-trained body
    head_learning_rate: float = option(1e-3, rule=POSITIVE, help=(
        "cross-encoder: learning rate of the fresh scoring head."))
    cross_encoder_loss: str = option("listwise", rule=one_of(*CROSS_ENCODER_LOSSES), help=(
        "cross-encoder: listwise (softmax over a group) or bce (pointwise)."))
    cross_encoder_mined: int = option(3, rule=at_least(1), help=(
        "cross-encoder: mined negatives per query and epoch (listwise and bce)."))
    cross_encoder_in_batch: int = option(4, rule=Rule(lambda n: n >= 0, "must be 0 or more"),
                                         help="cross-encoder, listwise: other queries'"
                                              " documents in each group.")
    # distill-query: query-only steps are ~20x cheaper than pair steps, so it runs longer
    student: str | None = option(None, cli=True, help=(
        "distill-query: the small query model (default: the base model's first layers)."))
    student_layers: int = option(3, rule=at_least(1), help=(
        "distill-query: layers the default student keeps."))
    distill_epochs: int = option(2, help="distill-query: passes over the texts.")
    distill_learning_rate: float = option(1e-4, help="distill-query: peak learning rate.")
    distill_titles: bool = option(True, help="distill-query: also distil document titles.")
    # seal: queries written by `cormorant data synth-queries` add pairs for their documents;
    # tildev2: their new words expand their passages (as the stage's expand= does at indexing)
    synthetic_queries: Path | None = option(None, cli=True, help=(
        "seal: a folder from 'cormorant data synth-queries' whose queries add training pairs"
        " for their documents; tildev2: whose queries' words expand their passages."))
    # tildev2: localized contrastive estimation over groups of BM25 negatives
    tilde_group: int = option(8, rule=at_least(2), help=(
        "tildev2: passages per training group, the positive and group-1 BM25 negatives (the"
        " paper's 8)."))
    # GPL (--unsupervised): pseudo-queries for a corpus without queries, then the gpl strategy
    unsupervised: bool = option(False, cli=True, help=(
        "Train from the corpus alone (GPL): pseudo-queries, mined negatives, teacher margins,"
        " Margin-MSE; no dev set, the last checkpoint is kept."))
    pseudo_queries: str = option("span", cli=True, rule=one_of(*PSEUDO_QUERIES), help=(
        "--unsupervised: span (random 4-16-word spans, no language model), title, or lm"
        " (few-shot generation, needs --examples)."))
    queries_per_passage: int | None = option(None, rule=at_least(1), help=(
        "--unsupervised: pseudo-queries per passage (default GPL's: ceil(250k/|C|), at least"
        " 3)."))
    examples: Path | None = option(None, cli=True, help=(
        "--pseudo-queries lm: JSONL of 1-8 {query, document} examples."))
    llm: str = option("transformers:smollm2", cli=True, help=(
        "--pseudo-queries lm: BACKEND:MODEL of the generator."))
    gpl_miners: str = option("dense", help="gpl: retrievers whose negatives are pooled:"
                                           " dense, bm25 or dense,bm25.")
    gpl_negatives: int = option(50, rule=at_least(1), help=(
        "gpl: each miner's top k (its positives removed)."))
    teacher_max_length: int = option(350, rule=at_least(8, " tokens"), help=(
        "gpl: tokens of the query and of each passage, each cut on its own, the teacher"
        " reads."))
    # late-interaction: ColBERT as PyLate trains it
    late_negatives: int | None = option(None, rule=Rule(lambda n: n >= 0, "must be 0 or more"),
                                        help=(
        "late-interaction: mined negatives per query and step (default 1, PyLate's triplets;"
        " with --teacher 7, so each query's distillation has 8 candidates; 0: in-batch only)."))
    projection_start: str = option("orthogonal", rule=one_of("orthogonal", "pca"), help=(
        "late-interaction: how the 128-d projection starts: orthogonal (seeded random, as"
        " ColBERT and PyLate start) or pca (the leading principal directions of the base"
        " model's token vectors over a sample of the corpus: the linear map that keeps the"
        " most of their dot products; better untrained, not after 3 epochs on SciFact)."))
    projection_sample: int = option(256, rule=at_least(1), help=(
        "late-interaction, pca: documents whose token vectors the directions come from."))
    query_length: int = option(32, rule=at_least(4, " tokens"), help=(
        "late-interaction: query tokens, [CLS] and [Q] included, padded with [MASK]."))
    document_length: int = option(180, rule=at_least(4, " tokens"), help=(
        "late-interaction: document tokens, [CLS] and [D] included, in training and search."))
    # in-batch
    cached: bool = option(False, help="in-batch: the cached loss (big batches, small memory).")
    mini_batch_size: int = option(16, help="cached: texts per forward pass.")
    # Dev evaluation and checkpoints
    dev_split: str | None = option(None, cli=True, help=(
        "Dev split for checkpoint selection (default: 10% of train held out)."))
    dev_fraction: float = option(0.1, rule=Rule(lambda f: 0 <= f < 1, "must be in [0, 1)"),
                                 help="Share of train held out as dev without a dev split.")
    dev_candidates: int = option(10, help="Dev: BM25 candidates per query re-ranked.")
    eval_steps: int | None = option(None, help=(
        "Steps between dev evaluations and checkpoints (default: one an epoch)."))
    resume: bool = option(False, help="Continue from OUT.work's last checkpoint.", cli=True)
    overwrite: bool = option(False, help="Replace an existing --out.", cli=True)
    fp16: bool | None = option(None, help=(
        "fp16 autocast (default: on a CUDA GPU; true without one is refused)."))

    def __post_init__(self) -> None:
        checked(self)
        if self.epochs is None:
            self.epochs = default_epochs(self.negatives, self.kind)
        if self.unsupervised:
            self._check_unsupervised()
        if self.teacher:
            from cormorant.training.teacher import teacher_path

            teacher_path(self.teacher)
        if self.teacher and not self.denoise and self.kind == "bi-encoder" \
                and not self.unsupervised and self.negatives not in TEACHER_STRATEGIES:
            raise CormorantError(f"--teacher is used by {', '.join(TEACHER_STRATEGIES)} and by"
                                 f" --denoise; {self.negatives} would ignore it")
        if self.denoise and not self.teacher:
            raise CormorantError("--denoise needs --teacher: the scorer that judges the mined"
                                 " negatives (e.g. --teacher 'rrf(bm25, chamfer)')")
        if self.synthetic_queries is not None and self.kind not in ("seal", "tildev2"):
            raise CormorantError("--synthetic-queries is for --kind seal and tildev2 (a"
                                 " bi-encoder trains on"
                                 " the folder itself: --dataset SYNTH_DIR)")

    def _check_unsupervised(self) -> None:
        """--unsupervised trains a bi-encoder with GPL and has no labels to select by."""
        if self.kind != "bi-encoder":
            raise CormorantError("--unsupervised trains a bi-encoder (GPL), not --kind"
                                 f" {self.kind}")
        if self.negatives not in ("in-batch", "gpl"):  # in-batch: the option's default
            raise CormorantError(f"--unsupervised trains with GPL's Margin-MSE; --negatives"
                                 f" {self.negatives} needs judged queries")
        if self.dev_split:
            raise CormorantError("--unsupervised has no labels: --dev-split cannot be used"
                                 " (no dev selection; the last checkpoint is kept)")
        self.negatives = "gpl"

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> TrainConfig:
        """Options from YAML or JSON; ``overrides`` (set on the command line) win."""
        from cormorant.data.files import read_text_file, yaml_problem

        text = read_text_file(path, "config file")
        try:
            raw = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise CormorantError(f"cannot read config {path}: {yaml_problem(exc)}") from None
        if not isinstance(raw, dict):
            raise CormorantError(f"config {path} must be a mapping of option names to values")
        raw = {k.replace("-", "_"): v for k, v in raw.items()}
        return cls.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Options by field name, checked; an unknown name or a bad value is a CormorantError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CormorantError(f"unknown training option(s): {', '.join(unknown)}")
        for required in ("dataset", "out"):
            if raw.get(required) is None:
                raise CormorantError(f"training needs --{required} (or '{required}:' in the config)")
        return cls(**raw)

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
