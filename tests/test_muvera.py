"""MUVERA FDE properties, checked against a direct reading of the paper's definition."""

import numpy as np
import pytest
from scipy import stats

from cormorant.index.muvera import (
    FDEConfig,
    chamfer,
    document_fde,
    encode_sets,
    partition_bits,
    partition_ids,
    query_fde,
)

RNG = np.random.default_rng(0)


def unit(n, d, rng=RNG):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_one_partition_identity_is_sum_and_mean():
    q, p = unit(4, 8), unit(6, 8)
    config = FDEConfig(dimension=8, repetitions=1, k_sim=0, d_proj=None)
    assert np.allclose(query_fde(q, config), q.sum(axis=0), atol=1e-6)
    assert np.allclose(document_fde(p, config), p.mean(axis=0), atol=1e-6)


def test_gray_decoding_and_codes():
    assert partition_ids(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])).tolist() == [3, 7, 0]
    codes = partition_bits(4)
    assert all(np.sum(codes[i] != codes[i + 1]) == 1 for i in range(15))  # adjacent: 1 bit
    assert (partition_ids(codes) == np.arange(16)).all()  # decode(encode(id)) == id


def test_one_point_document_gives_exact_chamfer_times_r():
    q, p = unit(5, 16), unit(1, 16)
    config = FDEConfig(dimension=16, repetitions=3, k_sim=3, d_proj=None, fill_empty=True)
    product = float(query_fde(q, config) @ document_fde(p, config))
    assert product == pytest.approx(3 * float((q @ p.T).sum()), abs=1e-4)


def test_invalid_configurations():
    with pytest.raises(ValueError, match="k_sim"):
        FDEConfig(dimension=8, k_sim=31)
    with pytest.raises(ValueError, match="d_proj"):
        FDEConfig(dimension=8, d_proj=0)
    with pytest.raises(ValueError, match="shape"):
        query_fde(unit(3, 7), FDEConfig(dimension=8))


def test_queries_never_fill_empty_partitions():
    point = unit(1, 8)
    config = FDEConfig(dimension=8, repetitions=1, k_sim=3, d_proj=None, fill_empty=True)
    fde = query_fde(point, config).reshape(8, 8)
    assert (np.abs(fde).sum(axis=1) > 0).sum() == 1  # only the point's own partition
    assert (np.abs(document_fde(point, config).reshape(8, 8)).sum(axis=1) > 0).all()


def test_query_fde_is_additive_over_disjoint_sets():
    a, b = unit(3, 16), unit(4, 16)
    config = FDEConfig(dimension=16, repetitions=4, k_sim=3, d_proj=8, final_dim=64)
    assert np.allclose(query_fde(np.vstack([a, b]), config),
                       query_fde(a, config) + query_fde(b, config), atol=1e-5)


def test_ams_projection_preserves_inner_products_on_average():
    x, y = unit(1, 64), unit(1, 64)
    products = []
    for seed in range(300):
        config = FDEConfig(dimension=64, repetitions=1, k_sim=0, d_proj=16, seed=seed)
        products.append(float(query_fde(x, config) @ query_fde(y, config)))
    assert np.mean(products) == pytest.approx((x @ y.T).item(), abs=0.05)


def test_dimensions_and_determinism():
    config = FDEConfig(dimension=32, repetitions=5, k_sim=4, d_proj=8)
    p = unit(10, 32)
    assert document_fde(p, config).shape == (5 * 16 * 8,)
    assert (document_fde(p, config) == document_fde(p, config)).all()
    other = FDEConfig(dimension=32, repetitions=5, k_sim=4, d_proj=8, seed=2)
    assert not np.allclose(document_fde(p, config), document_fde(p, other))
    assert query_fde(p, FDEConfig(dimension=32, final_dim=100)).shape == (100,)


def direct_reading(points, config, document):
    """The definition, one point and one repetition at a time (identity projection)."""
    blocks = []
    codes = partition_bits(config.k_sim)
    for r in range(config.repetitions):
        planes = np.random.default_rng(config.seed + r).standard_normal(
            (config.dimension, config.k_sim))
        bits = [[int(float(p @ planes[:, j]) > 0) for j in range(config.k_sim)] for p in points]
        ids = []
        for b in bits:
            c, value = 0, 0
            for bit in b:
                c ^= bit
                value = 2 * value + c
            ids.append(value)
        for k in range(config.partitions):
            members = [p for p, i in zip(points, ids, strict=True) if i == k]
            if members:
                block = np.mean(members, axis=0) if document else np.sum(members, axis=0)
            elif document and config.fill_empty:
                distances = [sum(x != y for x, y in zip(b, codes[k], strict=True)) for b in bits]
                block = points[int(np.argmin(distances))]
            else:
                block = np.zeros(config.dimension)
            blocks.append(block)
    return np.concatenate(blocks)


@pytest.mark.parametrize("document", [False, True])
def test_vectorised_encoding_matches_the_direct_reading(document):
    config = FDEConfig(dimension=12, repetitions=3, k_sim=3, d_proj=None, fill_empty=True)
    points = unit(5, 12)
    encode = document_fde if document else query_fde
    assert np.allclose(encode(points, config), direct_reading(points, config, document),
                       atol=1e-5)


def test_fde_inner_product_tracks_chamfer():
    rng = np.random.default_rng(3)
    centers = unit(10, 32, rng)

    def cloud(topics, n):
        """Points around a few topic centres: documents sharing the query's topics match."""
        picks = centers[rng.choice(topics, n)] + 0.3 * rng.normal(size=(n, 32))
        return picks / np.linalg.norm(picks, axis=1, keepdims=True)

    query = cloud([0, 1], 8)
    docs = [cloud(rng.choice(10, 2, replace=False), 12) for _ in range(60)]
    config = FDEConfig(dimension=32, repetitions=20, k_sim=4, d_proj=16)
    fq = query_fde(query, config)
    approx = [float(fq @ document_fde(d, config)) for d in docs]
    exact = [chamfer(query, d) for d in docs]
    assert stats.spearmanr(approx, exact).statistic > 0.7


@pytest.mark.parametrize("document", [False, True])
def test_batched_encoding_of_ragged_sets_matches_one_set_at_a_time(document):
    config = FDEConfig(dimension=12, repetitions=3, k_sim=3, d_proj=None, fill_empty=True)
    sets = [unit(n, 12) for n in (5, 0, 1, 9, 3)]  # an empty set in the middle
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    batched = encode_sets(np.vstack(sets), offsets, config, document=document)
    for row, points in zip(batched, sets, strict=True):
        expected = direct_reading(points, config, document) if len(points) \
            else np.zeros(config.output_dim)
        assert np.allclose(row, expected, atol=1e-5)


def test_ams_projection_applies_blockwise_to_the_identity_encoding():
    """Means, sums and filled points all commute with the linear AMS sketch."""
    from cormorant.index.muvera import repetition_draws

    identity = FDEConfig(dimension=16, repetitions=2, k_sim=2, d_proj=None)
    sketched = FDEConfig(dimension=16, repetitions=2, k_sim=2, d_proj=4)
    points = unit(7, 16)
    for encode in (query_fde, document_fde):
        full = encode(points, identity).reshape(2, 4, 16)
        small = encode(points, sketched).reshape(2, 4, 4)
        for r in range(2):
            assert np.allclose(full[r] @ repetition_draws(sketched, r)[1], small[r], atol=1e-5)


def test_final_projection_is_a_count_sketch_of_the_full_encoding():
    """Each full coordinate lands, with a random sign, in one of ``final_dim`` slots drawn
    from the seed stream [seed, 0x5EED], whatever the partitions did."""
    q, p = unit(6, 16), unit(8, 16)
    full = FDEConfig(dimension=16, repetitions=4, k_sim=2, d_proj=None, seed=7)
    small = FDEConfig(dimension=16, repetitions=4, k_sim=2, d_proj=None, seed=7, final_dim=48)
    rng = np.random.default_rng([7, 0x5EED])
    slots = rng.integers(0, 48, full.output_dim)
    signs = rng.choice(np.array([-1.0, 1.0]), full.output_dim)
    for encode in (query_fde, document_fde):
        expected = np.bincount(slots, weights=signs * encode(q if encode is query_fde else p, full),
                               minlength=48)
        assert np.allclose(encode(q if encode is query_fde else p, small), expected, atol=1e-5)


def clustered_sets(rng, count, size, centers):
    """Point sets around two of the shared centres each: related sets share centres."""
    out = []
    for _ in range(count):
        topics = rng.choice(len(centers), 2, replace=False)
        points = centers[rng.choice(topics, size)] + 0.35 * rng.normal(size=(size, centers.shape[1]))
        out.append(points / np.linalg.norm(points, axis=1, keepdims=True))
    return out


def test_retrieval_quality_matches_the_independent_muvera_python():
    """Same parameters, different random draws: the share of the exact Chamfer top-10 that
    the FDE's top 30 finds must be as good as muvera-python's (compare quality, not vectors)."""
    from muvera import Muvera

    rng = np.random.default_rng(11)
    centers = unit(40, 32, rng)
    docs = clustered_sets(rng, 300, 20, centers)
    queries = clustered_sets(rng, 20, 8, centers)
    exact = np.array([[(q @ d.T).max(axis=1).sum() for d in docs] for q in queries])
    truth = [set(np.argsort(-row)[:10]) for row in exact]

    def recall(q_fdes, d_fdes):
        top = np.argsort(-(q_fdes @ d_fdes.T), axis=1)[:, :30]
        return np.mean([len(t & set(row)) / 10 for t, row in zip(truth, top, strict=True)])

    def batch(sets, config, document):
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in sets])])
        return encode_sets(np.vstack(sets), offsets, config, document)

    ours = np.mean([recall(batch(queries, c, False), batch(docs, c, True))
                    for c in (FDEConfig(32, 10, 4, 8, seed=s) for s in range(3))])
    theirs = np.mean([recall(m.encode_queries(list(queries)), m.encode_documents(list(docs)))
                      for m in (Muvera(10, 4, 32, "ams_sketch", 8, seed=s) for s in range(3))])
    assert ours > 0.5  # far above the 0.1 a random top-30 of 300 would find
    print(f"recall of the exact top-10 in the FDE top-30: ours {ours:.3f}, muvera-python {theirs:.3f}")
    assert ours >= theirs - 0.05, (ours, theirs)


def test_fast_scan_pq_keeps_fde_candidates():
    """The compressed FDE index ``pqfs`` (1 byte per 8 dims) finds what flat search finds."""
    from cormorant.index.faiss_index import FaissIndex, factory_string
    from cormorant.retrieval.muvera import AUTO_FLAT_BELOW, fde_index_kind

    assert factory_string("pqfs", 5000, 10240) == "PQ2560x4fs"
    assert fde_index_kind("auto", AUTO_FLAT_BELOW - 1) == "flat"
    assert fde_index_kind("auto", AUTO_FLAT_BELOW) == "pqfs"
    assert fde_index_kind("hnsw", 10) == "hnsw"
    rng = np.random.default_rng(4)
    centers = unit(30, 32, rng)
    config = FDEConfig(32, 10, 4, 8)
    doc_sets, query_sets = clustered_sets(rng, 640, 20, centers), clustered_sets(rng, 20, 8, centers)
    docs = encode_sets(np.vstack(doc_sets), np.arange(0, 20 * 641, 20), config, True)
    queries = encode_sets(np.vstack(query_sets), np.arange(0, 8 * 21, 8), config, False)
    ids = [str(i) for i in range(len(docs))]
    found = {}
    for kind in ("flat", "pqfs"):
        index = FaissIndex(config.output_dim, kind=kind)
        index.add(ids, docs)
        found[kind] = index.search(queries, 50)[1]
    overlap = np.mean([len(set(a[:10]) & set(b)) / 10
                       for a, b in zip(found["flat"], found["pqfs"], strict=True)])
    assert overlap >= 0.9
