"""MUVERA fixed-dimensional encodings (Dhulipala et al., 2024): one vector per point set whose
inner products approximate multi-vector Chamfer similarity.

Per repetition r (seeded with ``seed + r``): SimHash with ``k_sim`` Gaussian hyperplanes splits
space into 2^k_sim partitions (partition id = Gray decoding of the sign bits, first hyperplane
most significant); each point is projected (identity, or an AMS sketch to ``d_proj``); a query's
block for a partition is the SUM of its points there, a document's block the MEAN, and an empty
document block is filled with the point whose sign bits are nearest in Hamming distance (ties:
lowest point index). Blocks are laid out ``r * B * d_proj + k * d_proj + j``. An optional final
Count Sketch (from the base seed, not ``seed + r``) reduces the result to ``final_dim``.

Then <F_q(Q), F_d(P)> ~ R * Chamfer(Q, P). Numbers differ from the C++ reference (its RNG is
not NumPy's); tests check the properties the paper states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

_FINAL_STREAM = 0x5EED  # second word of the final sketch's seed: a stream apart from seed + r


@dataclass(frozen=True)
class FDEConfig:
    """FDE parameters; the paper's Pareto setting is R=20, k_sim=5, d_proj=16 (10,240 dims).

    Example:
        >>> FDEConfig(dimension=384, repetitions=20, k_sim=5, d_proj=16).output_dim
        10240
    """

    dimension: int
    repetitions: int = 20
    k_sim: int = 5
    d_proj: int | None = 16  # None: identity projection (d_proj = dimension)
    fill_empty: bool = True  # documents only
    final_dim: int | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        if self.dimension < 1 or self.repetitions < 1:
            raise ValueError("dimension and repetitions must be positive")
        if not 0 <= self.k_sim < 31:
            raise ValueError(f"k_sim must be in [0, 31), got {self.k_sim}")
        if self.d_proj is not None and self.d_proj < 1:
            raise ValueError(f"d_proj must be positive (or None for identity), got {self.d_proj}")
        if self.final_dim is not None and self.final_dim < 1:
            raise ValueError(f"final_dim must be positive, got {self.final_dim}")

    @property
    def partitions(self) -> int:
        return 1 << self.k_sim

    @property
    def block_dim(self) -> int:
        return self.dimension if self.d_proj is None else self.d_proj

    @property
    def output_dim(self) -> int:
        return self.final_dim or self.repetitions * self.partitions * self.block_dim

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def repetition_draws(config: FDEConfig, r: int) -> tuple[np.ndarray, np.ndarray | None]:
    """SimHash hyperplanes (d x k_sim) and, for AMS, the (d x d_proj) sketch matrix.

    Drawn in a fixed order from ``default_rng(seed + r)``, so queries and documents agree.
    """
    rng = np.random.default_rng(config.seed + r)
    planes = rng.standard_normal((config.dimension, config.k_sim))
    if config.d_proj is None:
        return planes, None
    slots = rng.integers(0, config.d_proj, config.dimension)
    signs = rng.choice(np.array([-1.0, 1.0]), config.dimension)
    sketch = np.zeros((config.dimension, config.d_proj))
    sketch[np.arange(config.dimension), slots] = signs
    return planes, sketch


def partition_ids(bits: np.ndarray) -> np.ndarray:
    """Gray-decode rows of sign bits (first bit most significant): (0,1,0) -> 3, (1,0,0) -> 7."""
    k = bits.shape[1]
    return gray_decode(bits @ (1 << np.arange(k - 1, -1, -1, dtype=np.int64)))


def partition_bits(k_sim: int) -> np.ndarray:
    """The sign-bit pattern (Gray code) of every partition id: row i = bits of id i."""
    codes = gray_code(np.arange(1 << k_sim, dtype=np.int64))
    return (codes[:, None] >> np.arange(k_sim - 1, -1, -1)) & 1


@dataclass(frozen=True)
class _Randomness:
    """Every repetition's hyperplanes side by side (d x R*k_sim), every AMS sketch side by
    side (d x R*d_proj, or None for identity), and the final Count Sketch (or None)."""

    planes: np.ndarray
    sketches: np.ndarray | None
    final: sparse.csr_matrix | None


@lru_cache(maxsize=16)
def _randomness(config: FDEConfig) -> _Randomness:
    """All random matrices of ``config``, drawn once (per process) rather than per call."""
    drawn = [repetition_draws(config, r) for r in range(config.repetitions)]
    planes = np.hstack([p for p, _ in drawn]).astype(np.float32)
    sketches = None if config.d_proj is None else np.hstack([s for _, s in drawn]).astype(
        np.float32)
    final = None
    if config.final_dim is not None:
        width = config.repetitions * config.partitions * config.block_dim
        rng = np.random.default_rng([config.seed, _FINAL_STREAM])
        slots = rng.integers(0, config.final_dim, width)
        signs = rng.choice(np.array([-1.0, 1.0]), width)
        final = sparse.csr_matrix((signs.astype(np.float32), (np.arange(width), slots)),
                                  shape=(width, config.final_dim))
    return _Randomness(planes, sketches, final)


def encode_sets(tokens: np.ndarray, offsets: np.ndarray, config: FDEConfig,
                document: bool) -> np.ndarray:
    """FDEs of many point sets at once: set i is ``tokens[offsets[i]:offsets[i + 1]]``.

    Two matrix products for all sets and repetitions (sign bits, projections), and per
    repetition a sparse product for the per-partition sums, so encoding a corpus costs a few
    passes over its token matrix, not a Python loop over documents.

    Example:
        >>> config = FDEConfig(dimension=8, repetitions=2, k_sim=2, d_proj=4)
        >>> encode_sets(np.ones((5, 8)), np.array([0, 2, 5]), config, document=True).shape
        (2, 32)
    """
    tokens = np.asarray(tokens, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.int64)
    if tokens.ndim != 2 or tokens.shape[1] != config.dimension:
        raise ValueError(f"expected points of shape (n, {config.dimension}), got {tokens.shape}")
    n_sets, n_points = len(offsets) - 1, tokens.shape[0]
    B, width, k = config.partitions, config.block_dim, config.k_sim
    owner = np.repeat(np.arange(n_sets), np.diff(offsets))
    out = np.zeros((n_sets, config.repetitions, B, width), dtype=np.float32)
    drawn = _randomness(config)
    # Sign bits of every repetition packed as integers, first hyperplane most significant.
    weights = (1 << np.arange(k - 1, -1, -1, dtype=np.int64))
    bits = (tokens @ drawn.planes > 0).reshape(n_points, config.repetitions, k)
    packed = (bits * weights).sum(axis=2)  # k_sim = 0: all zeros, one partition
    projected_all = tokens if drawn.sketches is None else tokens @ drawn.sketches
    for r in range(config.repetitions):
        cells = owner * B + gray_decode(packed[:, r])
        projected = projected_all if drawn.sketches is None \
            else projected_all[:, r * width:(r + 1) * width]
        # Sum of each (set, partition) cell's points: a 0/1 sparse matrix times the points.
        members = sparse.csr_matrix((np.ones(n_points, np.float32), (cells, np.arange(n_points))),
                                    shape=(n_sets * B, n_points))
        block = np.asarray(members @ projected).reshape(n_sets, B, width)
        if document:
            counts = np.bincount(cells, minlength=n_sets * B).reshape(n_sets, B)
            block /= np.maximum(counts, 1)[..., None]
            if config.fill_empty and n_points:
                _fill_empty(block, counts, packed[:, r], projected, offsets, k)
        out[:, r] = block
    flat = out.reshape(n_sets, -1)
    if drawn.final is not None:
        flat = np.asarray((sparse.csr_matrix(flat) @ drawn.final).todense(), dtype=np.float32)
    return np.ascontiguousarray(flat)


def gray_code(ids: np.ndarray) -> np.ndarray:
    """The packed sign bits (Gray code) of partition ids: 3 -> 0b010."""
    return ids ^ (ids >> 1)


def gray_decode(codes: np.ndarray) -> np.ndarray:
    """Partition ids of packed sign bits (the bits read as a Gray code): 0b010 -> 3."""
    ids = codes.copy()
    shift = 1
    while shift < 32:
        ids ^= ids >> shift
        shift <<= 1
    return ids


def _fill_empty(block: np.ndarray, counts: np.ndarray, packed: np.ndarray,
                projected: np.ndarray, offsets: np.ndarray, k_sim: int) -> None:
    """Fill each non-empty set's empty partitions with its point nearest in Hamming distance
    to the partition's code (ties: the set's lowest point index)."""
    present = np.flatnonzero(np.diff(offsets) > 0)
    if not len(present):
        return
    n_points = packed.shape[0]
    ids = np.arange(1 << k_sim, dtype=np.int64)
    # Hamming distance of every point's bits to every partition's code (its Gray code).
    distance = np.bitwise_count(packed[:, None] ^ gray_code(ids)[None, :])
    # Min over each set of (distance, point index), packed in one integer so one reduceat does it.
    key = distance.astype(np.int64) * n_points + np.arange(n_points)[:, None]
    nearest = np.minimum.reduceat(key, offsets[present], axis=0) % n_points  # sets x partitions
    empty_set, empty_part = np.nonzero(counts[present] == 0)
    block[present[empty_set], empty_part] = projected[nearest[empty_set, empty_part]]


def query_fde(points: np.ndarray, config: FDEConfig) -> np.ndarray:
    """A query's FDE: per-partition sums. Filling empty partitions is for documents only."""
    points = np.asarray(points)
    return encode_sets(points, np.array([0, len(points)]), config, document=False)[0]


def document_fde(points: np.ndarray, config: FDEConfig) -> np.ndarray:
    """A document's FDE: per-partition means, empty partitions filled if configured."""
    points = np.asarray(points)
    return encode_sets(points, np.array([0, len(points)]), config, document=True)[0]


def chamfer(query: np.ndarray, document: np.ndarray) -> float:
    """Sum over query points of the best inner product with any document point."""
    return float((np.asarray(query) @ np.asarray(document).T).max(axis=1).sum())
