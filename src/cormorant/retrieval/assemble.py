"""Pipelines from their string form: built over a corpus, saved as an index, loaded back.

An index directory holds one sub-directory per leaf stage of its pipeline, each with its own
``meta.json`` and checksums, plus the document store, so ``rrf(bm25, dense)`` is built once and
then searched (or re-composed, ``bm25 >> dense``) without touching the corpus again.

Example:
    >>> pipe = build_pipeline("rrf(bm25, dense)", dataset.corpus)  # doctest: +SKIP
    >>> save_index("rrf(bm25, dense)", dataset.corpus, "indexes/scifact")  # doctest: +SKIP
    >>> handle = open_index("indexes/scifact")  # doctest: +SKIP
    >>> handle.pipeline.search("vitamin d", k=10)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cormorant import registry
from cormorant.errors import IndexFormatError, PipelineError
from cormorant.index.docstore import FILENAME as DOCSTORE_FILE
from cormorant.index.docstore import DocStore
from cormorant.index.format import atomic_directory, read_meta, write_meta
from cormorant.pipeline import Stage
from cormorant.pipeline_syntax import Leaf, leaves, materialize, parse
from cormorant.retrieval.base import Retriever, check_params
from cormorant.types import Corpus

log = logging.getLogger(__name__)
GROUP = "cormorant.retrievers"
REFORMULATORS = "cormorant.reformulators"


def retriever_class(name: str) -> type[Retriever]:
    """The retriever registered as ``name``; the error lists every known stage."""
    if name not in registry.names(GROUP):
        known = registry.names(GROUP) + registry.names("cormorant.fusers") \
            + registry.names(REFORMULATORS)
        raise PipelineError(f"unknown stage {name!r}; known stages: {', '.join(sorted(known))}")
    return registry.get(GROUP, name)


def reformulator_class(name: str) -> Any | None:
    """The query reformulator registered as ``name``, or None if ``name`` is not one."""
    return registry.get(REFORMULATORS, name) if name in registry.names(REFORMULATORS) else None


def build_pipeline(text: str, corpus: Corpus, built: dict[str, Stage] | None = None) -> Stage:
    """Parse ``text`` and build every leaf over ``corpus``.

    ``built`` memoises leaves by their string form, so evaluating ``dense`` and
    ``rrf(bm25, dense)`` over one corpus builds ``dense`` once.
    """
    spec = parse(text)
    validate(text)
    memo = {} if built is None else built

    def make(leaf: Leaf, position: int) -> Stage:
        key = str(leaf)
        if key not in memo:
            log.info("building %s over %s", leaf, corpus.name)
            cls = reformulator_class(leaf.name) or retriever_class(leaf.name)
            memo[key] = cls.build(corpus, **leaf.params)
        return memo[key]

    return materialize(spec, make)


def validate(text: str) -> None:
    """Check a pipeline's syntax, stage names and parameters without building anything."""
    for leaf in leaves(parse(text)):
        reformulator = reformulator_class(leaf.name)
        if reformulator is not None:
            reformulator._make(dict(leaf.params), None)  # checks options; loads no model
        else:
            check_params(retriever_class(leaf.name), "build", leaf.params)


def identity(text: str) -> list[dict[str, Any]]:
    """What determines each leaf's results (for cache keys): its name, parameters, and e.g. the
    fingerprint of the model a dense stage uses."""
    return [{"name": leaf.name, **(reformulator_class(leaf.name)
                                   or retriever_class(leaf.name)).identity(leaf.params)}
            for leaf in leaves(parse(text))]


def save_index(text: str, corpus: Corpus, out: str | Path, overwrite: bool = False) -> Path:
    """Build ``text`` over ``corpus`` and write it as an index directory, atomically."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise IndexFormatError(f"{out} already exists (use --overwrite to replace it)")
    pipeline = build_pipeline(text, corpus)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        count = DocStore.create(tmp / DOCSTORE_FILE, corpus)
        records = []
        for position, leaf in enumerate(pipeline.leaves()):
            assert isinstance(leaf, Retriever)
            sub = tmp / f"{position}-{leaf.name}"
            sub.mkdir()
            leaf_meta = leaf.save(sub)
            write_meta(sub, {"kind": leaf.reads(), "params": leaf.params, **leaf_meta})
            records.append({"name": leaf.name, "kind": leaf.reads(), "params": leaf.params,
                            "dir": sub.name})
        write_meta(tmp, {"kind": "pipeline", "pipeline": str(pipeline), "count": count,
                         "corpus": corpus.name, "leaves": records})
    return out


@dataclass
class IndexHandle:
    """An opened index: its pipeline, document store and metadata."""

    path: Path
    pipeline: Stage
    docs: DocStore
    meta: dict[str, Any]


LeafHook = Callable[[int, Retriever], Stage]
"""Given a stored leaf's position in ``meta.json`` and the loaded retriever, the stage to use."""


def open_index(path: str | Path, pipeline: str | None = None, verify: bool = True,
               loaded: dict[tuple[int, str], Stage] | None = None,
               wrap: LeafHook | None = None) -> IndexHandle:
    """Open an index directory, optionally re-composing its stages with another pipeline string.

    ``pipeline`` may re-arrange the stored stages or set query-time options
    (``bm25.lucene(rm3=true)``); a stage the index does not hold, or one whose settings would
    need a rebuild (another encoder), is an error.

    ``loaded`` memoises loaded leaves by (stored position, parameters) across calls, so several
    pipelines over one index share one encoder; ``wrap`` replaces each loaded leaf (the service
    wraps leaves to see live document updates).
    """
    path = Path(path)
    meta = read_meta(path, verify=verify)
    if meta.get("kind") != "pipeline":
        raise IndexFormatError(f"{path} is a {meta.get('kind')} index part, not a whole index;"
                               f" open its parent directory")
    stored = meta["leaves"]
    spec = parse(pipeline or meta["pipeline"])
    used: set[int] = set()
    docs = DocStore(path / DOCSTORE_FILE)

    def load(leaf: Leaf, position: int) -> Stage:
        reformulator = reformulator_class(leaf.name)
        if reformulator is not None:
            return reformulator.load(docs, **leaf.params)  # holds no index: nothing stored
        cls = retriever_class(leaf.name)
        fits = [i for i, rec in enumerate(stored) if rec["kind"] == cls.reads()]
        # Prefer a stored stage not used yet; one may serve twice (bm25 >> bm25(depth=10)).
        choices = [i for i in fits if i not in used] or fits
        if not choices:
            have = ", ".join(rec["name"] for rec in stored)
            raise PipelineError(f"index {path} holds {have}; it has no {cls.reads()} stage"
                                f" (build one with: cormorant index build --pipeline ...)")
        index = choices[0]
        used.add(index)
        sub = path / stored[index]["dir"]
        # Settings the stage was built with hold unless the caller's pipeline overrides them.
        params = {**stored[index]["params"], **leaf.params}
        check_params(cls, "load", params)
        key = (index, json.dumps(params, sort_keys=True, default=str))
        if loaded is not None and key in loaded:
            return loaded[key]
        stage: Stage = cls.load(sub, read_meta(sub, verify=verify), **params)
        if wrap is not None:
            stage = wrap(index, stage)
        if loaded is not None:
            loaded[key] = stage
        return stage

    stage = materialize(spec, load)
    return IndexHandle(path, stage, docs, meta)
