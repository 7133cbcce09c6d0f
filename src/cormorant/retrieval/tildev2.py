"""TILDEv2 (``tildev2``): contextualized exact term matching over a learned impact index.

Every passage is encoded once, at ``index build`` (or when a write adds it), into one sparse
row over the vocabulary: each of its tokens with the largest weight the model gave it
(:mod:`cormorant.retrieval.tilde` says how). A query is only tokenized: its token counts times
the stored matrix are the scores, score(q, d) = sum over query tokens of d's weight for that
token. So the stage is both:

- a first-stage retriever: one sparse product over the whole ``documents x vocabulary`` CSR
  matrix (an impact index; scipy's sparse product is its inverted-list traversal, exhaustive
  and exact, as Pyserini's impact search over Lucene is), top ``k``;
- a re-ranker (``bm25 % 100 >> tildev2(model=DIR)``): the candidates' stored rows times the
  query's counts, no neural inference at query time.

Passage expansion (the paper's second half): ``expand=FOLDER`` names the output of ``cormorant
data synth-queries`` over the same corpus; the words of a passage's generated queries that the
passage lacks are appended to it before it is weighted, as TILDEv2 appends expansion terms
(the paper used TILDE's own query-likelihood model to pick them; no TILDE checkpoint can be
downloaded here, so the project's own query generation writes them).

Takes writes like every stored stage: a segment is one CSR matrix; merges stack the live rows.

Example:
    >>> tilde = TildeV2Retriever.build(corpus, model="models/tildev2-scifact")  # doctest: +SKIP
    >>> tilde.search("vitamin d and depression", k=10)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cormorant.errors import DataError, IndexFormatError, PipelineError
from cormorant.index.segments import BASE, Segment, Segments, by_segment
from cormorant.params import BUILD, Param, Params
from cormorant.retrieval.base import Retriever
from cormorant.retrieval.encoders import model_fingerprint, same_model
from cormorant.retrieval.segmented import SegmentedRetriever
from cormorant.types import Corpus, Document, Queries, Run, top_rows

log = logging.getLogger(__name__)
IDS = "doc_ids.json"
MATRIX = "weights.npz"
BUILD_CHUNK = 1024  # passages weighted per progress step while building
QUERY_CHUNK = 256  # queries per sparse product in a first-stage search


class TildeV2Retriever(SegmentedRetriever):
    """TILDEv2 (``tildev2``): learned per-token passage weights, queries only tokenized; a
    first-stage impact retriever and an almost free re-ranker. Needs a model from ``cormorant
    train --kind tildev2``.

    Example:
        >>> tilde = TildeV2Retriever.build(corpus, model="models/tildev2")  # doctest: +SKIP
        >>> str(tilde)  # doctest: +SKIP
        'tildev2(model=models/tildev2)'
    """

    thread_safe: ClassVar[bool] = True
    name: ClassVar[str] = "tildev2"
    PARAMS: ClassVar[Params] = Retriever.PARAMS + Params(
        Param("model", str, None, "a checkpoint folder from 'cormorant train --kind tildev2'",
              when=BUILD, required=True, same=same_model),
        Param("expand", str, None, "a 'cormorant data synth-queries' folder: its queries'"
              " new words are appended to their passages before weighting", when=BUILD,
              nullable=True),
        Param("max_length", int, None, "tokens kept per passage (default: the model's)",
              when=BUILD, nullable=True, low=1),
        Param("batch_size", int, 32, "passages per encoder batch", low=1),
    )

    def __init__(self, segments: Segments, settings: dict[str, Any], queries: Any,
                 model: Any | None = None) -> None:
        super().__init__(settings, segments)
        self.queries = queries
        self._model = model

    @property
    def model(self) -> Any:
        """The passage encoder: loaded on first use (a build or a write); searching needs only
        the tokenizer."""
        if self._model is None:
            self._model = load_checkpoint(self.settings["model"], self.settings["max_length"])
        return self._model

    @classmethod
    def create(cls, corpus: Corpus, settings: dict[str, Any]) -> TildeV2Retriever:
        from tqdm.auto import tqdm

        model = load_checkpoint(settings["model"], settings["max_length"])
        expansions = read_expansions(Path(settings["expand"])) if settings["expand"] else {}
        empty = cls(Segments(()), settings, model.queries, model)
        doc_ids: list[str] = []
        parts = []
        with tqdm(total=len(corpus), desc="tildev2 weights", unit="doc") as bar:
            for batch in corpus.batches(BUILD_CHUNK):
                doc_ids.extend(d.doc_id for d in batch)
                parts.append(empty.weigh(batch, expansions))
                bar.update(len(batch))
        return cls(Segments((Segment.made(doc_ids, stacked(parts), BASE),)), settings,
                   model.queries, model)

    @classmethod
    def identity(cls, settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, "fingerprint": model_fingerprint(settings["model"])}

    def weigh(self, documents: list[Document], expansions: dict[str, str] | None = None) -> Any:
        """The CSR rows of ``documents``, each expanded first where ``expansions`` has words
        for it."""
        expansions = expansions or {}
        texts = [expanded(d.contents, expansions.get(d.doc_id, "")) for d in documents]
        return self.model.document_matrix(texts, self.settings["batch_size"])

    # -- segments ------------------------------------------------------------------------

    def index_documents(self, documents: list[Document]) -> Any:
        return self.weigh(documents)

    def combine(self, parts: list[tuple[Segment, np.ndarray]], retrain: bool = False) -> Any:
        return stacked([s.data[rows] for s, rows in parts])

    def write_segment(self, data: Any, directory: Path) -> dict[str, Any] | None:
        from scipy import sparse

        sparse.save_npz(directory / MATRIX, data, compressed=False)
        return {"postings": int(data.nnz)}

    def read_segment(self, directory: Path, doc_ids: list[str]) -> Any:
        return read_matrix(directory, len(doc_ids))

    # -- searching -----------------------------------------------------------------------

    def retrieve(self, queries: Queries, k: int) -> Run:
        segments = self.segments  # one snapshot for the whole batch
        qids = list(queries)
        live = [s for s in segments if s.live_count]
        ids = [d for s in live for d in s.doc_ids]
        run = Run()
        for start in range(0, len(qids), QUERY_CHUNK):
            chunk = qids[start:start + QUERY_CHUNK]
            counts = self.queries.matrix([queries[q] for q in chunk])
            scores = np.hstack([segment_scores(s, counts) for s in live]) if live \
                else np.zeros((len(chunk), 0), np.float32)
            for qid, row in zip(chunk, scores, strict=True):
                run[qid] = best(row, ids, k)
        return run

    def rescore(self, queries: Queries, candidates: Run) -> Run:
        segments = self.segments
        qids = list(queries)
        counts = self.queries.matrix([queries[q] for q in qids])
        run = Run()
        for i, qid in enumerate(qids):
            query = counts[i].T  # vocabulary x 1
            docs = segments.locate_each(candidates.get(qid, {}))
            hits: dict[str, float] = {}
            for position, wanted in by_segment([w for _, w in docs]).items():
                rows = segments.items[position].data[[docs[i][1][1] for i in wanted]]
                values = np.asarray((rows @ query).todense()).ravel()
                hits.update(zip([docs[i][0] for i in wanted], values.tolist(), strict=True))
            run[qid] = hits
        return run

    # -- on disk -------------------------------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        from scipy import sparse

        data = self.base_data()
        sparse.save_npz(directory / MATRIX, data, compressed=False)
        ids = list(self.segments.ids())
        (directory / IDS).write_text(json.dumps(ids))
        return {"count": len(ids), "postings": int(data.nnz),
                "fingerprint": model_fingerprint(self.settings["model"])}

    @classmethod
    def open(cls, directory: Path, meta: dict[str, Any],
             settings: dict[str, Any]) -> TildeV2Retriever:
        from cormorant.retrieval.tilde import QueryTokenizer

        if not Path(settings["model"]).is_dir():
            raise PipelineError(f"tildev2: the model folder {settings['model']!r} of index"
                                f" {directory.parent} is not there (searching needs its"
                                " tokenizer; pass model=DIR where it is now)")
        if model_fingerprint(settings["model"]) != meta.get("fingerprint"):
            raise PipelineError(f"index {directory.parent} was built with another tildev2 model"
                                f" than {settings['model']!r} (rebuild the index with it)")
        try:
            doc_ids = json.loads((directory / IDS).read_text())
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{directory}: cannot read document ids ({exc})") from None
        base = Segment.made(doc_ids, read_matrix(directory, len(doc_ids)), BASE)
        return cls(Segments((base,)), settings, QueryTokenizer.load(settings["model"]))


def load_checkpoint(path: str, max_length: int | None = None) -> Any:
    """The TILDEv2 model in ``path`` (passages cut to ``max_length`` tokens if given), or a
    one-line error saying how to make one."""
    from cormorant.retrieval.tilde import TildeModel, is_tilde_checkpoint

    if not Path(path).is_dir() or not is_tilde_checkpoint(path):
        raise PipelineError(f"tildev2: {path!r} is not a tildev2 checkpoint folder (no"
                            " TILDEv2 model can be downloaded here; train one with:"
                            " cormorant train --kind tildev2 -d DATASET -o DIR)")
    model = TildeModel.load(path)
    if max_length is not None:
        model.max_length = max_length
    return model


def segment_scores(segment: Segment, counts: Any) -> np.ndarray:
    """(queries x rows) scores against one segment; deleted rows score 0 (no match)."""
    scores = (counts @ segment.data.T).toarray().astype(np.float32, copy=False)
    if segment.deleted_count:
        scores[:, segment.deleted] = 0.0
    return scores


def best(scores: np.ndarray, ids: list[str], k: int) -> dict[str, float]:
    """The ``k`` best documents scoring above zero (sharing a weighted token with the query),
    best first, ties at the cut as trec_eval orders them (:func:`cormorant.types.top_rows`)."""
    positive = np.flatnonzero(scores > 0)
    if not len(positive):
        return {}
    values = scores[positive]
    found = [ids[i] for i in positive.tolist()]
    return {found[i]: float(values[i]) for i in top_rows(values, min(k, len(found)), found)}


def stacked(parts: list[Any]) -> Any:
    """One CSR matrix of ``parts``' rows in order."""
    from scipy import sparse

    return sparse.vstack(parts, format="csr", dtype=np.float32) if len(parts) != 1 \
        else parts[0].tocsr()


def read_matrix(directory: Path, rows: int) -> Any:
    """A segment's weights, checked against its document count."""
    from scipy import sparse

    try:
        matrix = sparse.load_npz(directory / MATRIX).tocsr()
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{directory}: cannot read the tildev2 weights ({exc})") from None
    if matrix.shape[0] != rows:
        raise IndexFormatError(f"{directory}: the tildev2 weights and the document ids disagree")
    return matrix


_WORD = re.compile(r"\w+")


def expanded(text: str, extra: str) -> str:
    """``text`` followed by the words of ``extra`` it does not already have (lower-cased, each
    once, in order): the expansion adds new tokens, it does not repeat the passage's own.

    Example:
        >>> expanded("Cats purr.", "why do cats purr so loudly")
        'Cats purr. why do so loudly'
    """
    have = {w.lower() for w in _WORD.findall(text)}
    new: list[str] = []
    for word in _WORD.findall(extra):
        if word.lower() not in have:
            have.add(word.lower())
            new.append(word)
    return f"{text} {' '.join(new)}" if new else text


def read_expansions(folder: Path) -> dict[str, str]:
    """Per document id, the text of its generated queries, from a ``cormorant data
    synth-queries`` folder (``queries.jsonl`` and ``qrels/train.tsv``, query -> its document)."""
    from cormorant.training.data import TrainingSet

    if not (folder / "qrels").is_dir():
        raise DataError(f"tildev2: expand={folder} is not a 'cormorant data synth-queries'"
                        " folder (no qrels/ in it)")
    synthetic = TrainingSet.load(folder, "train")
    found: dict[str, list[str]] = {}
    for qid, docs in synthetic.positives.items():
        for doc in docs:
            found.setdefault(doc, []).append(synthetic.queries[qid])
    return {doc: " ".join(texts) for doc, texts in found.items()}


__all__ = ["TildeV2Retriever", "best", "expanded", "load_checkpoint", "read_expansions"]
