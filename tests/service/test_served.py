"""Writes to a served index without HTTP: visibility, exactness against fresh builds,
durability, replay."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from cormorant.errors import CormorantError
from cormorant.index.wal import WriteLog
from cormorant.service.served import ServedIndex
from cormorant.types import Corpus, Document
from tests.conftest import DOCS

NEW = [Document("n1", "Pelicans are large birds that fish with a throat pouch.", title="Pelicans"),
       Document("n2", "Herons stand still in shallow water to catch fish.", title="Herons")]


def _open(path: Path, **kw) -> ServedIndex:
    return ServedIndex.open("tiny", path, ["bm25", "dense", "bm25 % 3 >> dense"], **kw)


def _current_corpus(deleted: set[str], replaced: dict[str, Document], added: list[Document]) -> Corpus:
    docs = [replaced.get(i, Document(i, x, title=t)) for i, t, x in DOCS if i not in deleted]
    return Corpus.from_documents(docs + added)


def test_bm25_after_writes_equals_a_fresh_build(index_dir):
    from cormorant.retrieval.bm25 import BM25Retriever

    live = _open(index_dir)
    replaced = Document("d3", "Statins and fish oil for the heart.", title="Statins revised")
    live.put(NEW)
    live.put([replaced])
    live.delete(["d5"])
    fresh = BM25Retriever.build(_current_corpus({"d5"}, {"d3": replaced}, NEW))
    for query in ("birds that fish", "fish oil heart", "cormorants fishermen china"):
        got = dict(live.search([query], k=10, pipeline="bm25")[0])
        want = fresh.search(query, k=10)["0"]
        assert got.keys() == want.keys()
        assert all(abs(got[d] - want[d]) < 1e-5 for d in want)
    live.close()


def test_dense_after_writes_equals_exact_search(index_dir):
    live = _open(index_dir)
    live.put(NEW)
    live.delete(["d2"])
    encoder = live.live.owners[1].encoder
    docs = [Document(i, x, title=t) for i, t, x in DOCS if i != "d2"] + NEW
    matrix = encoder.encode_documents([d.contents for d in docs])
    query = "birds that catch fish"
    scores = matrix @ encoder.encode_queries([query])[0]
    want = [docs[i].doc_id for i in np.argsort(-scores)[:5]]
    got = live.search([query], k=5, pipeline="dense")[0]
    assert [d for d, _ in got] == want
    assert np.allclose([s for _, s in got], np.sort(scores)[::-1][:5], atol=1e-5)
    assert "d2" not in {d for d, _ in live.search([query], k=10)[0]}  # rrf(bm25, dense) too
    # Re-scoring after `>>` sees the live vectors too: the same scores as exact search.
    text = "pelicans fish pouch"
    rescored = dict(live.search([text], k=3, pipeline="bm25 % 3 >> dense")[0])
    exact = dict(zip([d.doc_id for d in docs], (matrix @ encoder.encode_queries([text])[0]).tolist(),
                     strict=True))
    assert "n1" in rescored and all(abs(rescored[d] - exact[d]) < 1e-5 for d in rescored)
    live.close()


def test_writes_are_visible_counted_and_survive_a_reopen(index_dir):
    live = _open(index_dir)
    assert live.count == 6 and live.version == 0
    assert live.put(NEW).version == 1
    result = live.delete(["d1", "nope"])
    assert (result.changed, result.not_found, result.version) == (["d1"], ["nope"], 2)
    assert live.get("d1") is None and live.get("n1").title == "Pelicans"
    assert live.count == 7
    before = live.search(["pelican fish pouch"], k=3)
    live.close()

    again = _open(index_dir)
    assert (again.count, again.version) == (7, 2)
    assert again.get("d1") is None and again.get("n2").text.startswith("Herons")
    assert again.search(["pelican fish pouch"], k=3) == before
    # The build itself is untouched: its checksums still verify.
    from cormorant.index.format import read_meta

    read_meta(index_dir, verify=True)
    again.close()


def test_log_records_missing_from_the_store_are_replayed(index_dir):
    """A crash after the fsync of the log but before the SQLite commit loses nothing."""
    live = _open(index_dir)
    live.put(NEW[:1])
    live.close()
    log = WriteLog(index_dir / "live" / "log.jsonl")
    log.append({"seq": 2, "op": "put", "docs": [{"doc_id": "n2", "title": "Herons",
                                                 "text": NEW[1].text, "fields": {"src": "log"}}]})
    log.append({"seq": 3, "op": "delete", "ids": ["d4"]})
    log.close()
    again = _open(index_dir)
    assert again.version == 3
    assert again.get("n2").fields == {"src": "log"} and again.get("d4") is None
    assert "n2" in {d for d, _ in again.search(["herons shallow water"], k=3, pipeline="bm25")[0]}
    again.close()


def test_a_torn_last_line_is_dropped_and_a_damaged_one_refused(index_dir):
    live = _open(index_dir)
    live.put(NEW[:1])
    live.close()
    path = index_dir / "live" / "log.jsonl"
    with open(path, "ab") as handle:
        handle.write(b'{"seq": 2, "op": "put", "docs": [{"doc_')  # died mid-append
    again = _open(index_dir)
    assert again.version == 1 and b"doc_" not in path.read_bytes()
    again.close()
    path.write_bytes(b"garbage\n" + path.read_bytes())
    with pytest.raises(CormorantError, match="line 1 is damaged"):
        _open(index_dir)


def test_a_second_process_cannot_serve_the_same_index(index_dir):
    live = _open(index_dir)
    import subprocess
    import sys

    code = ("from cormorant.service.served import ServedIndex\n"
            f"ServedIndex.open('x', {str(index_dir)!r}, ['bm25'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "already served or written by another process" in done.stderr
    live.close()


def test_searches_during_writes_never_fail(index_dir):
    live = _open(index_dir)
    errors: list[BaseException] = []

    def search() -> None:
        try:
            for _ in range(20):
                live.search(["birds fish"], k=5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(5):
        live.put([Document(f"w{i}", f"water birds number {i} fish")])
    for t in threads:
        t.join()
    assert not errors and live.count == 11
    live.close()


def test_log_lines_are_json_with_sequence_numbers(index_dir):
    live = _open(index_dir)
    live.put(NEW)
    live.delete(["n1"])
    lines = (index_dir / "live" / "log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["seq"], r["op"]) for r in records] == [(1, "put"), (2, "delete")]
    assert records[1]["ids"] == ["n1"]
    live.close()


def test_separate_query_tower_encodes_queries_and_documents_keep_theirs(tmp_path, tiny_encoder):
    """dense(model=D, query_model=Q): live documents are encoded by D, queries by Q."""
    from cormorant.retrieval.assemble import save_index
    from tests.conftest import make_tiny_encoder

    query_tower = make_tiny_encoder(tmp_path / "q", hidden=32, seed=5)
    pipeline = f"dense(model={tiny_encoder}, query_model={query_tower})"
    corpus = Corpus.from_documents([Document(i, x, title=t) for i, t, x in DOCS])
    path = save_index(pipeline, corpus, tmp_path / "idx")
    live = ServedIndex.open("towers", path, encoder_wrapper=lambda e: e)
    live.put(NEW[:1])
    dense = live.pipelines[next(iter(live.pipelines))].leaves()[0]
    assert dense.query_encoder is not dense.encoder
    text = "pelicans with a pouch"
    query = dense.query_encoder.encode_queries([text])[0]
    docs = [Document(i, x, title=t) for i, t, x in DOCS] + NEW[:1]
    want = dense.encoder.encode_documents([d.contents for d in docs]) @ query
    got = dict(live.search([text], k=7)[0])
    assert all(abs(got[d.doc_id] - w) < 1e-5 for d, w in zip(docs, want, strict=True))
    live.close()


def test_rocchio_over_a_live_dense_index_equals_rocchio_over_a_fresh_build(index_dir,
                                                                           tiny_encoder):
    """rocchio(dense) in the service: feedback and results include written documents and
    never deleted ones, with the scores a fresh flat build over the same documents gives."""
    from cormorant.retrieval.dense import DenseRetriever
    from cormorant.retrieval.reformulate import Rocchio

    live = ServedIndex.open("tiny", index_dir, ["rocchio(dense, beta=0.5, fb_docs=2)"])
    live.put(NEW)
    live.delete(["d2"])
    docs = [Document(i, x, title=t) for i, t, x in DOCS if i != "d2"] + NEW
    dense = live.live.owners[1]
    fresh = DenseRetriever.build(Corpus.from_documents(docs), model=dense.encoder.path,
                                 cache=False)
    query = "birds that catch fish"
    want = Rocchio([fresh], beta=0.5, fb_docs=2).search(query, k=4)["0"]
    got = dict(live.search([query], k=4, pipeline="rocchio(dense, beta=0.5, fb_docs=2)")[0])
    assert got.keys() == want.keys() and "d2" not in got
    assert all(abs(got[d] - want[d]) < 1e-4 for d in want)
    assert {"n1", "n2"} & set(got)
    live.close()
