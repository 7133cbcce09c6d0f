"""Experiments: many pipelines over many datasets, with significance and regime splits.

An experiment is written on the command line (repeated ``--dataset`` and ``--pipeline``) or as
a YAML/JSON file::

    datasets:
      - ../shared/data/scifact
      - {path: ../shared/data/bright-queries/biology, documents: biology-docs.jsonl}
    pipelines: [bm25, dense, "rrf(bm25, dense)"]
    baseline: bm25
    split: test
    measures: [nDCG@10, RR@10, R@100]
    interp_extrap: {train: train, buckets: 5, seed: 0}

Leaves shared by several pipelines are built once per dataset, and every run is cached on disk
(:mod:`cormorant.eval.runs`), so re-running a report costs only the evaluation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cormorant.data import DatasetSpec
from cormorant.errors import CormorantError
from cormorant.eval.harness import EvalResult, score_run, timed_search
from cormorant.eval.measures import DEFAULT_MEASURES, parse_measures
from cormorant.eval.runs import RunCache, run_key
from cormorant.eval.significance import Comparison, compare, correct
from cormorant.index.docstore import CorpusDocuments
from cormorant.pipeline import Documents, Stage
from cormorant.types import Dataset

log = logging.getLogger(__name__)

CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass
class InterpExtrapConfig:
    """Settings of the interpolation/extrapolation resampling (see :mod:`.splits`)."""

    train: str = "train"
    buckets: int = 5
    seed: int = 0
    model: str | None = None
    out: Path | None = None  # where to write each dataset's folds for reuse


@dataclass
class Experiment:
    datasets: list[DatasetSpec]
    pipelines: list[str]
    split: str = "test"
    baseline: str | None = None
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    depth: int = 1000
    correction: str = "holm"
    permutations: int = 10_000
    interp_extrap: InterpExtrapConfig | None = None
    runs_dir: Path | None = None
    use_cache: bool = True
    runs: list[Path] = field(default_factory=list)
    """Run files scored beside the pipelines (one dataset): systems named by their path."""
    average: str = "judged"
    latency: bool = False
    """Also time single queries repeatedly (the report's latency spread; about a tenth more
    search time). Off by default: the extra searches call every stage again."""

    def validate(self) -> None:
        """Fail on every mistake that can be found before slow work starts."""
        from cormorant.eval.measures import AVERAGES
        from cormorant.retrieval.assemble import validate

        if not self.datasets or not (self.pipelines or self.runs):
            raise CormorantError("an experiment needs at least one dataset and one pipeline"
                                 " or run file")
        if self.runs and len(self.datasets) != 1:
            raise CormorantError("run files are scored against one dataset; give one --dataset")
        if self.average not in AVERAGES:
            raise CormorantError(f"average must be one of {', '.join(AVERAGES)}, got {self.average!r}")
        for path in self.runs:
            if not Path(path).is_file():
                raise CormorantError(f"run file not found: {path}")
        if not isinstance(self.pipelines, list) or not all(isinstance(p, str) for p in self.pipelines):
            raise CormorantError(f"pipelines must be a list of pipeline strings, got {self.pipelines!r}")
        if not isinstance(self.measures, list):
            raise CormorantError(f"measures must be a list of names, got {self.measures!r}")
        if self.depth < 1:
            raise CormorantError(f"depth must be at least 1, got {self.depth}")
        parse_measures(self.measures)
        for pipeline in self.pipelines:
            validate(pipeline)
        if self.baseline is not None and self.baseline not in self.systems():
            raise CormorantError(f"baseline {self.baseline!r} is not one of the pipelines or"
                                 f" run files ({', '.join(self.systems())})")

    def systems(self) -> list[str]:
        """What the tables and tests name each system: pipeline strings, then run paths."""
        return [*self.pipelines, *(str(p) for p in self.runs)]

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> Experiment:
        """Read an experiment from YAML or JSON; relative paths are relative to the file."""
        import yaml

        from cormorant.data.files import read_text_file, yaml_problem

        try:
            raw = yaml.safe_load(read_text_file(path, "experiment file"))
        except yaml.YAMLError as exc:
            raise CormorantError(f"{path} is not valid YAML/JSON: {yaml_problem(exc)}") from None
        if not isinstance(raw, dict):
            raise CormorantError(f"{path} must hold a mapping (datasets, pipelines, ...)")
        base = Path(path).parent
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise CormorantError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        datasets = [_dataset_spec(item, base) for item in raw.pop("datasets", [])]
        interp = raw.pop("interp_extrap", None)
        if interp is not None:
            interp = InterpExtrapConfig(**{**interp, "out": _path(interp.get("out"), base)})
        if "runs_dir" in raw:
            raw["runs_dir"] = _path(raw["runs_dir"], base)
        if "runs" in raw:
            raw["runs"] = [_path(p, base) for p in raw["runs"] or []]
        try:
            return cls(datasets=datasets, interp_extrap=interp, **{**raw, **overrides})
        except TypeError as exc:
            raise CormorantError(f"{path}: {exc}") from None


def _path(value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else base / path


def _dataset_spec(item: Any, base: Path) -> DatasetSpec:
    if isinstance(item, str):
        return DatasetSpec(_path(item, base))  # type: ignore[arg-type]
    if isinstance(item, dict) and "path" in item:
        return DatasetSpec(_path(item["path"], base), _path(item.get("documents"), base),  # type: ignore[arg-type]
                           bool(item.get("long_documents", False)), _prompts(item))
    raise CormorantError(f"a dataset entry must be a path or {{path: ...}}, got {item!r}")


PROMPTS = ("query_prompt", "document_prompt")


def _prompts(item: dict[str, Any]) -> dict[str, str]:
    found = {name: item[name] for name in PROMPTS if name in item}
    for name, value in found.items():
        if not isinstance(value, str):
            raise CormorantError(f"{name} of dataset {item['path']} must be a string")
    return found


def instructed(pipeline: str, prompts: dict[str, str]) -> str:
    """``pipeline`` with ``prompts`` given to every stage that declares them and was not given
    its own (so the instruction is part of each stage's identity and cache key).

    Example:
        >>> instructed("rrf(bm25, dense)", {"query_prompt": "query: "})
        "rrf(bm25, dense(query_prompt='query: '))"
    """
    if not prompts:
        return pipeline
    from cormorant import registry
    from cormorant.pipeline_syntax import leaves, parse

    spec = parse(pipeline)
    for leaf in leaves(spec):
        declared = registry.stage_class(leaf.name).PARAMS
        for name, value in prompts.items():
            if name in declared and name not in leaf.params:
                leaf.params[name] = value
    return str(spec)


@dataclass
class ExperimentResult:
    experiment: Experiment
    results: list[EvalResult]
    curves: dict[tuple[str, str], dict[int, float]]
    comparisons: list[Comparison]
    regimes: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        exp = self.experiment
        return {
            "split": exp.split, "baseline": exp.baseline, "measures": exp.measures,
            "correction": exp.correction,
            "results": [r.to_json() | {"recall_curve": self.curves[(r.dataset, r.pipeline)]}
                        for r in self.results],
            "significance": [c.to_json() for c in self.comparisons],
            "interp_extrap": self.regimes,
        }


def run_experiment(exp: Experiment) -> ExperimentResult:
    """Evaluate every (dataset, pipeline) pair, then compare and resample."""
    exp.validate()
    cache = RunCache()
    results, curves, regimes = [], {}, {}
    curve_ks = [k for k in CURVE_KS if k <= exp.depth]
    for spec in exp.datasets:
        dataset = spec.load()
        split = dataset.split(exp.split)
        built: dict[str, Stage] = {}
        texts = CorpusDocuments(dataset.corpus)  # one store for every pipeline that reads text
        for pipeline in exp.systems():
            if pipeline in exp.pipelines:
                result = _evaluate_pair(exp, dataset, split, pipeline, (built, texts), cache,
                                        instructed(pipeline, spec.prompts))
            else:
                result = _evaluate_run_file(exp, dataset, split, Path(pipeline))
            curve = score_run(result.run, dataset.name, exp.split, split, pipeline, {},
                              exp.depth, [f"R@{k}" for k in curve_ks], exp.average).metrics
            curves[(dataset.name, pipeline)] = {k: curve[f"R@{k}"] for k in curve_ks}
            results.append(result)
            if exp.runs_dir and pipeline in exp.pipelines:
                result.run.to_trec(exp.runs_dir / f"{dataset.name}.{_slug(pipeline)}.trec",
                                   tag=_slug(pipeline)[:40] or "run")
        if exp.interp_extrap:
            regimes[dataset.name] = _regimes(exp, dataset, [r for r in results
                                                            if r.dataset == dataset.name])
    comparisons = _compare(exp, results)
    return ExperimentResult(exp, results, curves, comparisons, regimes)


def _evaluate_pair(exp: Experiment, dataset: Dataset, split: Any, pipeline: str,
                   shared: tuple[dict[str, Stage], Documents], cache: RunCache,
                   built_as: str | None = None) -> EvalResult:
    """One pipeline on one dataset; ``shared`` holds the dataset's stages built so far and
    its document texts, both reused across its pipelines. ``built_as`` is the pipeline with
    the dataset's instructions in it (the results keep the name as written)."""
    from cormorant.pipeline_syntax import parse
    from cormorant.retrieval.assemble import build_pipeline, identity

    built_as = built_as or pipeline
    key = run_key(dataset, exp.split, split, {"pipeline": str(parse(built_as)),
                                              "stages": identity(built_as)}, exp.depth)
    cached = cache.get(key) if exp.use_cache else None
    if cached is not None:
        log.info("%s on %s: run from cache", pipeline, dataset.name)
        run, timing = cached
        return score_run(run, dataset.name, exp.split, split, pipeline, timing, exp.depth,
                         exp.measures, exp.average)
    start = time.perf_counter()
    stage = build_pipeline(built_as, dataset.corpus, *shared)
    run, timing = timed_search(stage, split.queries, time.perf_counter() - start,
                               latency=exp.latency)
    cache.put(key, run, timing)  # whole run: exclusions must be dropped before any cut
    return score_run(run, dataset.name, exp.split, split, pipeline, timing, exp.depth,
                     exp.measures, exp.average)


def _evaluate_run_file(exp: Experiment, dataset: Dataset, split: Any, path: Path) -> EvalResult:
    """Score a TREC run read from ``path`` exactly as a pipeline's run is scored (exclusions
    dropped, cut to the depth by trec_eval's order); it has no timing."""
    from cormorant.types import Run

    run = Run.from_trec(path)
    if not set(run) & set(split.qrels):
        log.warning("%s answers none of the %s judged queries of %s/%s: is it a run of another"
                    " dataset?", path, f"{len(split.qrels):,}", dataset.name, exp.split)
    return score_run(run, dataset.name, exp.split, split, str(path), {}, exp.depth,
                     exp.measures, exp.average)


def _compare(exp: Experiment, results: list[EvalResult]) -> list[Comparison]:
    if exp.baseline is None:
        return []
    comparisons = []
    for base in (r for r in results if r.pipeline == exp.baseline):
        for other in (r for r in results if r.dataset == base.dataset and r is not base):
            for measure in base.metrics:
                a = {q: v[measure] for q, v in other.per_query.items()}
                b = {q: v[measure] for q, v in base.per_query.items()}
                comparisons.append(compare(base.dataset, measure, other.pipeline, exp.baseline,
                                           a, b, permutations=exp.permutations))
    return correct(comparisons, exp.correction)


def _regimes(exp: Experiment, dataset: Dataset, results: list[EvalResult]) -> dict[str, Any]:
    from cormorant.eval.splits import make_split, regime_scores, write_split
    from cormorant.retrieval.encoders import SentenceTransformerEncoder

    config = exp.interp_extrap
    assert config is not None
    encoder = SentenceTransformerEncoder(config.model, show_progress=False)
    split = make_split(dataset, encoder, config.train, exp.split, config.buckets, config.seed)
    if config.out is not None:
        write_split(split, dataset, dataset.split(config.train).qrels,
                    dataset.split(exp.split).qrels, config.out / dataset.name)
    systems = {r.pipeline: {m: regime_scores(split, r.per_query, m) for m in r.metrics}
               for r in results}
    return {"folds": len(split.folds), "buckets": split.buckets, "seed": split.seed,
            "encoder": split.encoder, "systems": systems,
            "nearest_train_similarity": {
                "interpolation": _mean(f.nearest_train_similarity["interpolation"]
                                       for f in split.folds),
                "extrapolation": _mean(f.nearest_train_similarity["extrapolation"]
                                       for f in split.folds)},
            "test_queries_per_fold": [len(f.extrapolation) for f in split.folds]}


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in text).strip("_")
