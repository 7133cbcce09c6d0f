"""Writes to ``bm25.lucene`` (and ``rm3``, which reads the same index) through Lucene's own
IndexWriter: shown at once, durable, replayed, seen by readers, merged into a fresh build."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyserini", reason="needs the [lucene] extra")
pytestmark = pytest.mark.java

from cormorant.errors import IndexWriteError  # noqa: E402
from cormorant.index.format import read_meta  # noqa: E402
from cormorant.index.wal import WriteLog  # noqa: E402
from cormorant.retrieval.assemble import build_pipeline, open_index, save_index  # noqa: E402
from cormorant.types import Corpus, Document  # noqa: E402
from tests.conftest import DOCS, assert_same_run  # noqa: E402

NEW = [Document("n1", "Pelicans are large birds that fish with a throat pouch.", title="Pelicans"),
       Document("n2", "Herons stand still in shallow water to catch fish.", title="Herons")]
REPLACED = Document("d3", "Statins and fish oil for the heart.", title="Statins revised")
FILLER = [Document(f"f{i}", f"Notes on {topic}, week {i}.")
          for i, topic in enumerate(["gardening", "tides", "woodwork", "baking"] * 6)]
"""Enough other documents that two replaced or deleted ones stay under the share of deleted
documents (20%) past which Lucene's merge policy purges them on its own."""
PROBES = {"p1": "birds that fish", "p2": "fish oil heart", "p3": "cormorants fishermen china",
          "p4": "depression risk"}


def _corpus(deleted: set[str] = frozenset(), replaced: tuple[Document, ...] = (),
            added: tuple[Document, ...] = ()) -> Corpus:
    by_id = {d.doc_id: d for d in replaced}
    docs = [by_id.get(i, Document(i, x, title=t)) for i, t, x in DOCS if i not in deleted]
    return Corpus.from_documents(docs + FILLER + list(added))


WRITTEN = _corpus({"d5"}, (REPLACED,), tuple(NEW))
"""The collection after :func:`_write`."""


def _write(handle) -> None:
    handle.live.add(NEW)
    handle.live.add([REPLACED])
    assert handle.live.delete(["d5", "nope"]).not_found == ["nope"]


def _fresh(pipeline: str, corpus: Corpus = WRITTEN) -> dict:
    return build_pipeline(pipeline, corpus).search(PROBES, k=10)


def _largest_difference(got: dict, want: dict) -> float:
    return max(abs(got[q][d] - want[q][d]) for q in want for d in want[q] if d in got[q])


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return save_index("bm25.lucene", _corpus(), tmp_path / "idx")


def test_writes_show_at_once_and_a_merge_gives_a_fresh_builds_scores(index):
    with open_index(index, write=True) as handle:
        _write(handle)
        before = handle.pipeline.search(PROBES, k=10)
        assert "d5" not in {d for hits in before.values() for d in hits}
        assert list(before["p2"])[0] == "d3"  # the replacement, not the statins text
        assert {"n1", "n2"} <= set(before["p1"])
        fresh = _fresh("bm25.lucene")
        assert {q: set(h) for q, h in before.items()} == {q: set(h) for q, h in fresh.items()}
        # Lucene still counts the replaced d3 and the deleted d5 in N, the document
        # frequencies and the average length, until a merge purges them.
        drift = _largest_difference(before, fresh)
        print(f"largest BM25 score difference from a fresh build before the merge: {drift:.4f}")
        assert drift > 1e-3
        handle.live.merge()
        assert_same_run(handle.pipeline.search(PROBES, k=10), fresh, tol=1e-4)
        assert not (index / "live" / "segments").exists()  # the working copy went with the merge
    assert_same_run(open_index(index).pipeline.search(PROBES, k=10), fresh, tol=1e-4)


def test_writes_survive_close_and_reopen_and_leave_the_build_alone(index):
    built = index / "0-bm25.lucene" / "lucene"
    files = {p.name: p.stat().st_mtime_ns for p in built.iterdir()}
    with open_index(index, write=True) as handle:
        _write(handle)
        before = handle.pipeline.search(PROBES, k=10)
    assert {p.name: p.stat().st_mtime_ns for p in built.iterdir()} == files
    read_meta(index, verify=True)
    with open_index(index, write=True) as again:
        assert again.live.count == len(WRITTEN)
        assert_same_run(again.pipeline.search(PROBES, k=10), before)
        again.live.delete(["n2"])
    assert "n2" not in open_index(index).pipeline.search(PROBES, k=10)["p1"]


def test_log_records_missing_from_lucene_are_replayed(index):
    """A crash after the log's fsync but before Lucene's commit loses nothing."""
    with open_index(index, write=True) as handle:
        _write(handle)
    log = WriteLog(index / "live" / "log.jsonl")
    log.append({"seq": 4, "op": "put", "docs": [{"doc_id": "n3", "title": "Gannets",
                                                 "text": "Gannets plunge into the sea for fish."}]})
    log.append({"seq": 5, "op": "delete", "ids": ["d1"]})
    log.close()
    with open_index(index, write=True) as again:
        run = again.pipeline.search({"q": "gannets plunge", "v": "vitamin d"}, k=10)
        assert list(run["q"])[0] == "n3" and "d1" not in run["v"]
    # Committed by Lucene and by the replay's commit: the next opening has nothing to replay.
    assert (index / "live" / "log.jsonl").stat().st_size == 0
    assert list(open_index(index).pipeline.search({"q": "gannets plunge"}, k=1)["q"]) == ["n3"]


def test_a_reader_sees_the_writes_committed_when_it_opens(index):
    with open_index(index, write=True) as handle:
        _write(handle)
        reader = open_index(index)  # beside the writer: no lock, no replay into Lucene
        assert_same_run(reader.pipeline.search(PROBES, k=10),
                        handle.pipeline.search(PROBES, k=10))
        assert reader.live.get("n1").title == "Pelicans"
        handle.live.add([Document("n4", "Puffins carry fish crosswise in their beaks.")])
        assert list(handle.pipeline.search({"q": "puffins"}, k=1)["q"]) == ["n4"]
        reader.close()


def test_rm3_reads_the_written_index(index):
    with open_index(index, write=True) as handle:
        rm3 = handle.open_pipeline("rm3(fb_docs=2)")  # loaded before the writes: shares them
        _write(handle)
        assert {"n1", "n2"} <= set(rm3.search(PROBES, k=10)["p1"])
        handle.live.merge()
        assert_same_run(rm3.search(PROBES, k=10), _fresh("rm3(fb_docs=2)"), tol=1e-4)
    reopened = open_index(index, pipeline="bm25.lucene(rm3=true, fb_docs=2)")
    assert_same_run(reopened.pipeline.search(PROBES, k=10), _fresh("rm3(fb_docs=2)"), tol=1e-4)


def test_a_write_lucene_cannot_take_changes_nothing(index):
    with open_index(index, write=True) as handle:
        with pytest.raises(IndexWriteError, match="must be 1 to 32766 bytes"):
            handle.live.add([Document("x" * 40_000, "too long an id for one Lucene term")])
        assert handle.live.version == 0 and handle.live.writable
        handle.live.add(NEW)
        assert handle.live.version == 1
    assert (index / "live" / "log.jsonl").read_text() == ""


def test_writes_go_on_after_a_merge(index):
    with open_index(index, write=True) as handle:
        _write(handle)
        handle.live.merge()
        handle.live.add([Document("n4", "Puffins carry fish crosswise in their beaks.")])
        handle.live.delete(["n1"])
    reader = open_index(index)
    assert reader.live.count == len(WRITTEN)
    run = reader.pipeline.search({"q": "puffins", "p": "pelicans"}, k=3)
    assert list(run["q"])[:1] == ["n4"] and "n1" not in run["p"]


def _open_files_under(folder: Path) -> list[str]:
    proc = Path("/proc/self/fd")
    if not proc.is_dir():
        pytest.skip("needs /proc to list open files")
    found = []
    for fd in proc.iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_searches_during_writes_never_fail_and_old_searchers_close(index):
    import threading

    with open_index(index, write=True) as handle:
        rm3 = handle.open_pipeline("rm3(fb_docs=2)")
        errors: list[BaseException] = []
        stop = threading.Event()

        def search() -> None:
            while not stop.is_set():
                try:
                    handle.pipeline.search({"q": "fish"}, k=3)
                    rm3.search({"q": "fish"}, k=3)
                except BaseException as exc:  # any failure fails the test
                    errors.append(exc)

        thread = threading.Thread(target=search)
        thread.start()
        try:
            for i in range(8):
                handle.live.add([Document(f"s{i}", f"Seabird {i} dives for fish.")])
                handle.live.delete([f"s{i - 1}"] if i else ["d2"])
        finally:
            stop.set()
            thread.join()
        assert not errors
        assert list(rm3.search({"q": "seabird 7"}, k=1)["q"]) == ["s7"]
        # Two copies, each with one searcher of two readers: none left on replaced files.
        assert not [f for f in _open_files_under(index) if f.endswith("(deleted)")]


def test_a_write_lucene_fails_to_commit_is_replayed_at_the_next_opening(index, monkeypatch):
    from cormorant.retrieval.lucene import LuceneFiles

    def refuse(files: LuceneFiles, prepared: object) -> None:
        files.close_writer(wait=False)  # as a failed commit does: nothing of it stays
        raise IndexWriteError("bm25.lucene: No space left on device")

    with open_index(index, write=True) as handle:
        monkeypatch.setattr(LuceneFiles, "apply", refuse)
        with pytest.raises(IndexWriteError, match="No space left"):
            handle.live.add(NEW)  # logged, then refused by Lucene
        monkeypatch.undo()
        assert "reopen it" in handle.live.read_only_reason
        assert "n1" not in handle.pipeline.search(PROBES, k=10)["p1"]
    with open_index(index, write=True) as again:
        assert again.live.version == 1
        assert {"n1", "n2"} <= set(again.pipeline.search(PROBES, k=10)["p1"])
