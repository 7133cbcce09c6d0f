"""Which kinds of model ``cormorant train --kind`` trains, and where each one is defined.

The driver (:func:`cormorant.training.trainer.train`) looks the kind up here and runs it; a
new kind is one module with a :class:`~cormorant.training.trainer.TrainingKind` subclass and
one line in ``KINDS``. The table names modules rather than importing them, so checking
``--kind`` loads no torch.

Example:
    >>> sorted(KINDS)
    ['bi-encoder', 'cross-encoder', 'late-interaction', 'seal', 'tildev2']
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from cormorant.errors import CormorantError

KINDS: dict[str, str] = {
    "bi-encoder": "cormorant.training.bi_encoder:BiEncoderKind",
    "cross-encoder": "cormorant.training.cross_encoder:CrossEncoderKind",
    "late-interaction": "cormorant.training.late_interaction:LateInteractionKind",
    "seal": "cormorant.training.seal:SealKind",
    "tildev2": "cormorant.training.tildev2:TildeKind",
}


def training_kind(name: str) -> Any:
    """A fresh instance of the kind registered as ``name``.

    Example:
        >>> training_kind("seal").name  # doctest: +SKIP
        'seal'
    """
    if name not in KINDS:
        raise CormorantError(f"--kind must be one of {', '.join(KINDS)}, got {name!r}")
    module, _, attribute = KINDS[name].partition(":")
    return getattr(import_module(module), attribute)()
