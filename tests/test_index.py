import json

import numpy as np
import pytest

from cormorant.errors import CormorantError, IndexFormatError
from cormorant.index.docstore import DocStore
from cormorant.index.faiss_index import FaissIndex, factory_string
from cormorant.index.format import atomic_directory, read_meta, write_meta
from cormorant.types import Document


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, dim))
    points = centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype("float32")


def test_flat_matches_exact_numpy():
    vectors, queries = clustered(500, 16), clustered(20, 16, seed=1)
    index = FaissIndex(16, "flat", "ip")
    index.add([f"d{i}" for i in range(500)], vectors)
    scores, rows = index.search(queries, 5)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    assert (rows == exact).all()
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, exact, axis=1), atol=1e-5)


def test_l2_scores_are_negated_distances():
    index = FaissIndex(2, "flat", "l2")
    index.add(["a", "b"], np.array([[0, 0], [3, 4]], dtype="float32"))
    scores, rows = index.search(np.array([[0, 0]], dtype="float32"), 2)
    assert rows[0].tolist() == [0, 1]
    assert scores[0].tolist() == [0.0, -25.0]


@pytest.mark.parametrize("kind, floor", [("hnsw", 0.95), ("ivf", 0.9), ("ivfpq", 0.5)])
def test_approximate_indexes_recall_against_exact(kind, floor):
    vectors, queries = clustered(4000, 32), clustered(50, 32, seed=1)
    exact = FaissIndex(32, "flat")
    exact.add([str(i) for i in range(4000)], vectors)
    approx = FaissIndex(32, kind)
    approx.add([str(i) for i in range(4000)], vectors)
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= floor


def test_factory_shortcuts_and_raw_strings():
    assert factory_string("ivf", 10_000, 384) == "IVF400,Flat"
    assert factory_string("ivfpq", 10_000, 384) == "IVF400,PQ48x8np"
    assert factory_string("IVF16,PQ8", 10, 64) == "IVF16,PQ8"
    with pytest.raises(CormorantError, match="cannot build"):
        FaissIndex(8, "NotAnIndex").add(["a"], np.ones((1, 8), dtype="float32"))


def test_blockwise_build_is_sized_for_the_whole_collection(tmp_path):
    vectors = clustered(2500, 8)
    index = FaissIndex(8, "ivf", expected_count=2500)
    for start in range(0, 2500, 1000):  # trains on the first block, sized for all 2500
        index.add([str(i) for i in range(start, start + len(vectors[start:start + 1000]))],
                  vectors[start:start + 1000])
    assert index.factory == factory_string("ivf", 2500, 8) == "IVF200,Flat"
    unsized = FaissIndex(8, "ivf")
    unsized.add([str(i) for i in range(1000)], vectors[:1000])
    unsized.add([str(i) for i in range(1000, 2500)], vectors[1000:])
    assert unsized.factory == "IVF126,Flat"  # what was built, not what 2500 ids would suggest
    with atomic_directory(tmp_path / "idx") as tmp:
        meta = unsized.save(tmp)
    assert FaissIndex.load(tmp_path / "idx", meta).factory == "IVF126,Flat"


def test_wrong_dimension_is_an_error():
    index = FaissIndex(4)
    with pytest.raises(CormorantError, match="dimension 4"):
        index.add(["a"], np.ones((1, 3), dtype="float32"))


def test_save_load_round_trip(tmp_path):
    vectors = clustered(100, 8)
    index = FaissIndex(8, "hnsw")
    index.add([f"d{i}" for i in range(100)], vectors)
    with atomic_directory(tmp_path / "idx") as tmp:
        meta = index.save(tmp)
        write_meta(tmp, {"kind": "test", "index": meta})
    loaded = FaissIndex.load(tmp_path / "idx", read_meta(tmp_path / "idx")["index"])
    assert loaded.ids == index.ids
    assert (loaded.search(vectors[:3], 4)[1] == index.search(vectors[:3], 4)[1]).all()


def test_crash_while_writing_leaves_no_index(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "idx") as tmp:
        (tmp / "part").write_text("half")
        raise RuntimeError("power cut")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_keeps_old_index_until_new_one_is_complete(tmp_path):
    with atomic_directory(tmp_path / "idx") as tmp:
        write_meta(tmp, {"kind": "old"})
    with pytest.raises(IndexFormatError, match="already exists"), \
            atomic_directory(tmp_path / "idx"):
        pass
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "idx", overwrite=True) as tmp:
        raise RuntimeError("crash")
    assert read_meta(tmp_path / "idx")["kind"] == "old"
    with atomic_directory(tmp_path / "idx", overwrite=True) as tmp:
        write_meta(tmp, {"kind": "new"})
    assert read_meta(tmp_path / "idx")["kind"] == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


@pytest.mark.parametrize("one_step", [True, False])
def test_overwrite_swaps_the_directory_whole(tmp_path, monkeypatch, one_step):
    """Where the system swaps two paths in one step (Linux) the target always names a whole
    index; elsewhere two renames do it. Either way the new index is in place and nothing is
    left beside it."""
    import cormorant.index.format as index_format

    if not one_step:
        monkeypatch.setattr(index_format, "exchange_paths", lambda first, second: False)
    with atomic_directory(tmp_path / "idx") as tmp:
        write_meta(tmp, {"kind": "old"})
        (tmp / "old-only").write_text("x")
    with atomic_directory(tmp_path / "idx", overwrite=True) as tmp:
        write_meta(tmp, {"kind": "new"})
    assert read_meta(tmp_path / "idx")["kind"] == "new"
    assert not (tmp_path / "idx" / "old-only").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_exchange_paths_swaps_two_directories(tmp_path):
    from cormorant.index.format import exchange_paths

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from-a").write_text("a")
    (tmp_path / "b").mkdir()
    if not exchange_paths(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this system has no one-step exchange (renameat2)")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from-a"]
    assert list((tmp_path / "a").iterdir()) == []
    with pytest.raises(OSError):
        exchange_paths(tmp_path / "a", tmp_path / "missing")


def test_leftovers_of_a_cut_off_replace_are_found_and_named(tmp_path):
    from cormorant.index.format import leftovers

    for name in ("idx", ".idx.k8jptr0c.tmp", ".idx.old-3337", ".idx2.k8jptr0c.tmp",
                 ".idx.old-x", "idx.bak"):
        (tmp_path / name).mkdir()
    assert [p.name for p in leftovers(tmp_path / "idx")] == [".idx.k8jptr0c.tmp",
                                                              ".idx.old-3337"]
    (tmp_path / "idx").rmdir()  # killed between the two renames of the fallback swap
    with pytest.raises(IndexFormatError, match=r"left the previous one at .*\.idx\.old-3337"):
        read_meta(tmp_path / "idx")


def _saved(tmp_path):
    index = FaissIndex(8)
    index.add(["a", "b"], clustered(2, 8))
    with atomic_directory(tmp_path / "idx") as tmp:
        write_meta(tmp, {"kind": "test", "index": index.save(tmp)})
    return tmp_path / "idx"


def test_truncated_file_is_detected(tmp_path):
    path = _saved(tmp_path)
    data = (path / "vectors.faiss").read_bytes()
    (path / "vectors.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="corrupt or truncated"):
        read_meta(path)


def test_missing_and_foreign_and_outdated(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(IndexFormatError, match="not a directory"):
        read_meta(tmp_path / "nothing")
    (path / "ids.json").unlink()
    with pytest.raises(IndexFormatError, match="ids.json is missing"):
        read_meta(path)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(IndexFormatError, match="version 99"):
        read_meta(path)
    (path / "meta.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(IndexFormatError, match="foreign"):
        read_meta(path)
    (path / "meta.json").write_text("{trunc")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        read_meta(path)


def test_docstore(tmp_path):
    docs = [Document("d1", "text one", "T1", {"year": 2020}), Document("d2", "text two")]
    assert DocStore.create(tmp_path / "docs.sqlite", docs) == 2
    store = DocStore(tmp_path / "docs.sqlite")
    assert store.get("d1") == docs[0]
    assert store.get("zz") is None
    assert set(store.get_many(["d2", "d1", "zz"])) == {"d1", "d2"}
    assert len(store) == 2
