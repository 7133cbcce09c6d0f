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

import numpy as np

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


def _repetition(config: FDEConfig, r: int) -> tuple[np.ndarray, np.ndarray | None]:
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


def sign_bits(points: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """1 where a point lies strictly on the positive side of a hyperplane (exact 0 -> 0)."""
    return (points @ planes > 0).astype(np.int64)


def partition_ids(bits: np.ndarray) -> np.ndarray:
    """Gray-decode sign bits (first bit most significant): (0,1,0) -> 3, (1,0,0) -> 7."""
    k = bits.shape[1]
    if k == 0:
        return np.zeros(bits.shape[0], dtype=np.int64)
    decoded = np.bitwise_xor.accumulate(bits, axis=1)
    return decoded @ (1 << np.arange(k - 1, -1, -1, dtype=np.int64))


def partition_bits(k_sim: int) -> np.ndarray:
    """The sign-bit pattern (Gray code) of every partition id: row i = bits of id i."""
    ids = np.arange(1 << k_sim, dtype=np.int64)
    gray = ids ^ (ids >> 1)
    return (gray[:, None] >> np.arange(k_sim - 1, -1, -1)) & 1


def _encode(points: np.ndarray, config: FDEConfig, document: bool) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != config.dimension:
        raise ValueError(f"expected points of shape (n, {config.dimension}), got {points.shape}")
    B, width = config.partitions, config.block_dim
    out = np.zeros((config.repetitions, B, width))
    codes = partition_bits(config.k_sim)
    for r in range(config.repetitions):
        planes, sketch = _repetition(config, r)
        bits = sign_bits(points, planes)
        ids = partition_ids(bits)
        projected = points if sketch is None else points @ sketch
        np.add.at(out[r], ids, projected)
        if not document:
            continue
        counts = np.bincount(ids, minlength=B)
        filled = counts > 0
        out[r][filled] /= counts[filled, None]
        if config.fill_empty and len(points) and not filled.all():
            empty = np.flatnonzero(~filled)
            hamming = (bits[:, None, :] != codes[None, empty, :]).sum(axis=2)  # points x empty
            out[r][empty] = projected[np.argmin(hamming, axis=0)]  # argmin: lowest index on ties
    flat = out.reshape(-1)
    if config.final_dim is not None:
        rng = np.random.default_rng([config.seed, _FINAL_STREAM])
        slots = rng.integers(0, config.final_dim, flat.shape[0])
        signs = rng.choice(np.array([-1.0, 1.0]), flat.shape[0])
        flat = np.bincount(slots, weights=signs * flat, minlength=config.final_dim)
    return flat.astype(np.float32)


def query_fde(points: np.ndarray, config: FDEConfig) -> np.ndarray:
    """A query's FDE: per-partition sums. Filling empty partitions is for documents only."""
    return _encode(points, config, document=False)


def document_fde(points: np.ndarray, config: FDEConfig) -> np.ndarray:
    """A document's FDE: per-partition means, empty partitions filled if configured."""
    return _encode(points, config, document=True)


def chamfer(query: np.ndarray, document: np.ndarray) -> float:
    """Sum over query points of the best inner product with any document point."""
    return float((np.asarray(query) @ np.asarray(document).T).max(axis=1).sum())
