"""Training retrievers: negative samplers, losses and strategies run by the
sentence-transformers Trainer (``cormorant train``).

Strategies (``--negatives``): ``in-batch``, ``random``, ``bm25``, ``dense``, ``star``, ``adore``
(``star+adore`` chains them), ``tas-balanced``, ``distill-query``; ``--kind cross-encoder``
trains a re-ranker. Nothing here is imported by ``import cormorant``: torch loads only when
training runs.

Example:
    >>> from cormorant.training.config import TrainConfig
    >>> from cormorant.training.trainer import train
    >>> train(TrainConfig(dataset=Path("../shared/data/scifact"), out=Path("models/star"),
    ...                   negatives="star"))  # doctest: +SKIP
"""
