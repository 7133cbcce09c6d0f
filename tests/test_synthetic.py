"""Promptagator synthetic queries: the few-shot prompt, sampling, the round-trip filter, the
dataset it writes, and the CLI command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cormorant.errors import DataError
from cormorant.llm.fake import EchoModel
from cormorant.pipeline import Flow, Stage
from cormorant.training.synthetic import (
    Example,
    SynthConfig,
    SynthResult,
    few_shot_prompt,
    generate_queries,
    load_examples,
    pick_documents,
    round_trip_filter,
    write_dataset,
)
from cormorant.types import Corpus, Document, Run
from tests.conftest import DOCS, write_beir

CORPUS = Corpus.from_documents([Document(i, x, title=t) for i, t, x in DOCS], name="tiny")


def examples_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_has_the_examples_then_the_document_and_an_empty_query() -> None:
    shots = [Example(f"doc {i}", f"query {i}") for i in range(8)]
    prompt = few_shot_prompt(shots, "the new document")
    assert prompt.count("Document:") == 9 and prompt.count("Query:") == 9
    assert prompt.endswith("Document: the new document\nQuery:")
    with pytest.raises(DataError, match="1 to 8 examples"):
        few_shot_prompt(shots + [Example("d", "q")], "x")


def test_prompt_clips_documents_and_examples_to_their_word_budgets() -> None:
    config = SynthConfig(doc_words=3, example_words=2)
    prompt = few_shot_prompt([Example("one two three four", "q")], "a b c d e", config)
    assert prompt == "Document: one two\nQuery: q\n\nDocument: a b c\nQuery:"


def test_load_examples_checks_the_file(tmp_path: Path) -> None:
    good = examples_file(tmp_path / "ok.jsonl", [{"query": "birds", "doc_id": "d2"},
                                                 {"query": "q", "document": "text"}])
    loaded = load_examples(good, CORPUS)
    assert loaded[0] == Example("Cormorants Cormorants are diving birds that catch fish underwater.",
                                "birds")
    too_many = examples_file(tmp_path / "9.jsonl", [{"query": "q", "document": "d"}] * 9)
    with pytest.raises(DataError, match="9 examples; Promptagator uses at most 8"):
        load_examples(too_many)
    with pytest.raises(DataError, match="does not exist"):
        load_examples(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="doc_id 'zz' is not in the corpus"):
        load_examples(examples_file(tmp_path / "b.jsonl", [{"query": "q", "doc_id": "zz"}]), CORPUS)
    with pytest.raises(DataError, match="needs a non-empty 'query'"):
        load_examples(examples_file(tmp_path / "c.jsonl", [{"document": "x"}]))


def test_exactly_per_doc_samples_per_document_with_their_own_seeds() -> None:
    llm = EchoModel(reply="a question")
    result = generate_queries(llm, [Example("d", "q")], list(CORPUS), SynthConfig(per_doc=3),
                              progress=False)
    assert result.generated == 18 and len(result.queries) == 18
    for doc in CORPUS:
        texts = {result.queries[f"synth-{doc.doc_id}-{i}"] for i in range(3)}
        assert len(texts) == 3  # sampled with seeds 0, 1, 2: no greedy duplicates
        assert all(result.source[f"synth-{doc.doc_id}-{i}"] == doc.doc_id for i in range(3))


def test_duplicates_within_a_document_are_dropped() -> None:
    class Same(EchoModel):
        def generate(self, prompts, params):  # noqa: ANN001, ANN201
            return ["same query"] * len(prompts)
    result = generate_queries(Same(), [Example("d", "q")], list(CORPUS)[:2],
                              SynthConfig(per_doc=4), progress=False)
    assert len(result.queries) == 2 and result.duplicates == 6


class Stub(Stage):
    """Ranks a fixed list per query text; records that it searched without candidates."""

    def __init__(self, rankings: dict[str, list[str]]) -> None:
        self.rankings, self.calls = rankings, []

    def transform(self, flow: Flow) -> Flow:
        self.calls.append(flow.run)
        return flow.with_run(Run({q: {d: 10.0 - i for i, d in enumerate(self.rankings[t])}
                                  for q, t in flow.queries.items()}))


def test_round_trip_filter_keeps_queries_whose_document_ranks_within_k() -> None:
    result = SynthResult(queries={"a": "qa", "b": "qb", "c": "qc"},
                         source={"a": "d1", "b": "d2", "c": "d3"}, generated=3)
    stub = Stub({"qa": ["d1", "d9"], "qb": ["d9", "d2"], "qc": ["d7", "d8", "d3"]})
    assert set(round_trip_filter(result, stub, 1, progress=False).queries) == {"a"}
    kept = round_trip_filter(result, stub, 2, progress=False)
    assert set(kept.queries) == {"a", "b"} and kept.filtered == 1
    assert all(c is None for c in stub.calls)  # the whole corpus, not candidates
    assert round_trip_filter(result, stub, 0, progress=False) is result


def test_written_dataset_is_what_train_reads(tmp_path: Path) -> None:
    from cormorant.training.data import TrainingSet

    result = SynthResult(queries={"s1": "diving birds"}, source={"s1": "d2"}, generated=1)
    out = write_dataset(result, CORPUS, tmp_path / "synth")
    data = TrainingSet.load(out, "train")
    assert data.queries == {"s1": "diving birds"} and data.positives == {"s1": ["d2"]}
    with pytest.raises(Exception, match="already exists"):
        write_dataset(result, CORPUS, tmp_path / "synth")
    with pytest.raises(DataError, match="no synthetic query survived"):
        write_dataset(SynthResult(), CORPUS, tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_pick_documents_is_a_seeded_sample() -> None:
    assert len(pick_documents(CORPUS, None, 0)) == 6
    sample = [d.doc_id for d in pick_documents(CORPUS, 3, 1)]
    assert len(sample) == 3 and sample == [d.doc_id for d in pick_documents(CORPUS, 3, 1)]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "cormorant.cli", *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                          timeout=120)


def test_cli_writes_a_filtered_dataset(tmp_path: Path) -> None:
    data = write_beir(tmp_path / "tiny")
    shots = examples_file(tmp_path / "ex.jsonl", [{"query": "birds", "doc_id": "d2"}])
    # echo answers with the document's last words: BM25 finds most documents from them.
    done = cli("data", "synth-queries", "--dataset", str(data), "--examples", str(shots),
               "--out", str(tmp_path / "out"), "--llm", "echo", "--per-doc", "2",
               "--filter-k", "1", "--doc-words", "30",
               env={"CORMORANT_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert "queries kept of 12 generated" in done.stdout
    info = json.loads((tmp_path / "out" / "synthetic.json").read_text())
    assert info["generated"] == 12 and info["kept"] + info["filtered"] + info["duplicates"] <= 12
    assert (info["doc_words"], info["example_words"], info["examples"]) == (30, 80, 1)
    assert (tmp_path / "out" / "qrels" / "train.tsv").read_text().startswith("query-id\tcorpus-id")


@pytest.mark.parametrize("change, message", [
    ({"--examples": "missing.jsonl"}, "examples file"),
    ({"--filter-pipeline": "nope"}, "unknown stage 'nope'"),
    ({"--per-doc": "0"}, "per-doc"),
    ({"--doc-words": "0"}, "--doc-words"),
    ({"--llm": "zzz:model"}, "unknown language-model backend"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, change: dict, message: str) -> None:
    data = write_beir(tmp_path / "tiny")
    shots = examples_file(tmp_path / "ex.jsonl", [{"query": "birds", "doc_id": "d2"}])
    options = {"--dataset": str(data), "--examples": str(shots), "--out": str(tmp_path / "out"),
               "--llm": "echo", **{k: (str(tmp_path / v) if k == "--examples" else v)
                                   for k, v in change.items()}}
    done = cli("data", "synth-queries", *[x for kv in options.items() for x in kv])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    done = cli("data", "synth-queries", "--dataset", str(write_beir(tmp_path / "t")), "--examples",
               str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "already exists" in done.stderr
