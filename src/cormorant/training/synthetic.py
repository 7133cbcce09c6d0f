"""Synthetic training queries with a language model (Promptagator, Dai et al. 2023).

From at most eight (document, query) examples of a task, a few-shot prompt makes the model
write queries for the corpus's documents; a round-trip filter keeps a query only if a retriever
over the *whole* corpus returns its source document in the top ``k``. The result is a BEIR
dataset folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``) that
``cormorant train`` reads, so a task-specific retriever needs no labelled data.

The paper filters with a dual encoder trained on all generated pairs; with the generation
cache this is two runs: ``--filter-k 0`` (keep all), ``cormorant train`` on that, then the same
command with ``--filter-pipeline 'dense(model=TRAINED)'``, which generates nothing new.

Example:
    >>> from cormorant.llm.fake import EchoModel
    >>> examples = [Example("Cats purr when content.", "why do cats purr")]
    >>> print(few_shot_prompt(examples, "Dogs bark at strangers."))
    Document: Cats purr when content.
    Query: why do cats purr
    <BLANKLINE>
    Document: Dogs bark at strangers.
    Query:
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from cormorant.data.files import iter_jsonl
from cormorant.errors import DataError
from cormorant.llm import GenerationParams, LanguageModel
from cormorant.pipeline import Stage
from cormorant.types import Corpus, Document

log = logging.getLogger(__name__)
MAX_EXAMPLES = 8  # Promptagator's prompts hold at most eight task examples


@dataclass(frozen=True)
class Example:
    """One few-shot example: a document's text and a query it answers."""

    document: str
    query: str


@dataclass
class SynthConfig:
    """Settings of a synthetic-query run (defaults from PAPERS.md, Promptagator)."""

    per_doc: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 32
    max_docs: int | None = None
    doc_words: int = 120
    example_words: int = 80
    filter_k: int = 1
    seed: int = 0
    doc_prefix: str = "Document:"
    query_prefix: str = "Query:"
    batch: int = 32

    def __post_init__(self) -> None:
        if self.per_doc < 1 or self.max_new_tokens < 1 or self.filter_k < 0:
            raise DataError("per-doc and max-new-tokens must be >= 1, filter-k >= 0")
        if self.doc_words < 1 or self.example_words < 1:
            raise DataError("--doc-words and --example-words must be at least 1")
        if self.max_docs is not None and self.max_docs < 1:
            raise DataError(f"--max-docs must be at least 1, got {self.max_docs}")


@dataclass
class SynthResult:
    """What was generated and what survived the filter."""

    queries: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)  # query id -> its document id
    generated: int = 0
    duplicates: int = 0
    filtered: int = 0


def load_examples(path: str | Path, corpus: Corpus | None = None) -> list[Example]:
    """Examples from JSONL: ``{"query", "document"}`` or ``{"query", "doc_id"}`` (text taken from
    ``corpus``). At most eight, as in Promptagator.

    Raises:
        DataError: a missing file, a malformed line, an unknown doc_id, none or more than 8.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"examples file {path} does not exist")
    rows = list(iter_jsonl(path))
    if not rows:
        raise DataError(f"{path} holds no examples; give 1 to {MAX_EXAMPLES}")
    if len(rows) > MAX_EXAMPLES:
        raise DataError(f"{path} holds {len(rows)} examples; Promptagator uses at most"
                        f" {MAX_EXAMPLES}")
    wanted = {str(r["doc_id"]) for r in rows if isinstance(r, dict) and "doc_id" in r}
    texts = {d.doc_id: d.contents for d in corpus if d.doc_id in wanted} if wanted and corpus else {}
    out = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not str(row.get("query", "")).strip():
            raise DataError(f"{path}, example {i}: needs a non-empty 'query'")
        if "document" in row:
            document = str(row["document"])
        elif "doc_id" in row:
            if str(row["doc_id"]) not in texts:
                raise DataError(f"{path}, example {i}: doc_id {row['doc_id']!r} is not in the corpus")
            document = texts[str(row["doc_id"])]
        else:
            raise DataError(f"{path}, example {i}: needs 'document' (text) or 'doc_id'")
        if not document.strip():
            raise DataError(f"{path}, example {i}: the document is empty")
        out.append(Example(document, str(row["query"]).strip()))
    return out


def _clip(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def few_shot_prompt(examples: Sequence[Example], document: str, config: SynthConfig | None = None
                    ) -> str:
    """e_doc(d_1), e_query(q_1), ..., e_doc(d), then the empty query prefix."""
    config = config or SynthConfig()
    if not 1 <= len(examples) <= MAX_EXAMPLES:
        raise DataError(f"a prompt takes 1 to {MAX_EXAMPLES} examples, got {len(examples)}")
    shots = "".join(f"{config.doc_prefix} {_clip(e.document, config.example_words)}\n"
                    f"{config.query_prefix} {e.query}\n\n" for e in examples)
    return f"{shots}{config.doc_prefix} {_clip(document, config.doc_words)}\n{config.query_prefix}"


def pick_documents(corpus: Corpus, max_docs: int | None, seed: int) -> list[Document]:
    """All documents, or a seeded sample of ``max_docs`` of them (corpus order kept)."""
    docs = [d for d in corpus if d.contents.strip()]
    if max_docs is not None and max_docs < len(docs):
        keep = set(random.Random(seed).sample(range(len(docs)), max_docs))
        docs = [d for i, d in enumerate(docs) if i in keep]
    return docs


def generate_queries(llm: LanguageModel, examples: Sequence[Example], docs: Sequence[Document],
                     config: SynthConfig, progress: bool = True) -> SynthResult:
    """``per_doc`` sampled queries per document; duplicates within a document dropped.

    Each sample has its own seed (``seed + i``), so greedy duplicates are avoided (the paper
    samples at temperature 0.7) and a re-run replays the cache exactly.
    """
    result = SynthResult()
    prompts = [few_shot_prompt(examples, d.contents, config) for d in docs]
    seen: dict[str, set[str]] = {}
    bar = tqdm(total=len(docs) * config.per_doc, desc="synthetic queries", unit="query",
               disable=not progress)
    for i in range(config.per_doc):
        params = GenerationParams(max_new_tokens=config.max_new_tokens,
                                  temperature=config.temperature, top_p=config.top_p,
                                  seed=config.seed + i, stop=("\n",))
        for start in range(0, len(docs), config.batch):
            texts = llm.generate(prompts[start:start + config.batch], params)
            for doc, text in zip(docs[start:start + config.batch], texts, strict=True):
                result.generated += 1
                query = " ".join(text.split())
                if not query:
                    continue
                qid = f"synth-{doc.doc_id}-{i}"
                if query in seen.setdefault(doc.doc_id, set()):
                    result.duplicates += 1
                    continue
                seen[doc.doc_id].add(query)
                result.queries[qid] = query
                result.source[qid] = doc.doc_id
            bar.update(len(texts))
    bar.close()
    return result


def round_trip_filter(result: SynthResult, retriever: Stage, k: int,
                      batch: int = 256, progress: bool = True) -> SynthResult:
    """Keep a query only if its source document is in ``retriever``'s top ``k`` over the whole
    corpus. ``k == 0`` keeps everything."""
    if k == 0:
        return result
    kept = SynthResult(generated=result.generated, duplicates=result.duplicates)
    qids = list(result.queries)
    for start in tqdm(range(0, len(qids), batch), desc="round-trip filter", unit="batch",
                      disable=not progress):
        chunk = {q: result.queries[q] for q in qids[start:start + batch]}
        run = retriever.search(chunk, k)
        for q in chunk:
            if result.source[q] in run.get(q, {}):
                kept.queries[q] = result.queries[q]
                kept.source[q] = result.source[q]
    kept.filtered = len(result.queries) - len(kept.queries)
    return kept


def write_dataset(result: SynthResult, corpus: Corpus, out: Path, split: str = "train",
                  overwrite: bool = False, info: dict | None = None) -> Path:
    """A BEIR folder ``cormorant train`` reads: the corpus, the queries, ``qrels/<split>.tsv``.

    Written into a temporary folder renamed into place, so a crash leaves no half dataset.
    """
    from cormorant.index.format import atomic_directory

    if not result.queries:
        raise DataError("no synthetic query survived the filter; nothing to write"
                        " (try more documents, --per-doc or a larger --filter-k)")
    with atomic_directory(out, overwrite=overwrite) as tmp:
        with (tmp / "corpus.jsonl").open("w", encoding="utf-8") as fh:
            for doc in corpus:
                fh.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text},
                                    ensure_ascii=False) + "\n")
        with (tmp / "queries.jsonl").open("w", encoding="utf-8") as fh:
            for qid, text in result.queries.items():
                fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        with (tmp / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for qid, doc in result.source.items():
                fh.write(f"{qid}\t{doc}\t1\n")
        (tmp / "synthetic.json").write_text(json.dumps(
            {"generated": result.generated, "duplicates": result.duplicates,
             "filtered": result.filtered, "kept": len(result.queries), **(info or {})},
            indent=2) + "\n")
    return out
