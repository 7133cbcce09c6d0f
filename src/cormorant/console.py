"""What the command line shows: one labelled progress line per phase, libraries kept quiet.

Without ``-v`` only warnings reach the terminal, and the libraries' own chatter (weight-loading
bars, transformers' advice, FAISS's optional-module lookups, Java's INFO lines) is hidden;
each slow phase shows one bar saying what it does ("encoding 5,183 documents with
all-MiniLM-L6-v2", "searching 300 queries"). With ``-v`` the log lines and the libraries'
output come back, except FAISS's failed lookup of its AVX-512 build, which is expected on
most machines and reads like an error.

Only the CLI calls :func:`configure`; library code only calls :func:`progress`. The
environment variables that quiet transformers and huggingface_hub are set by the CLI itself
(``cli.py``), which owns its process: this module changes no one's environment.

Example:
    >>> with progress("searching 3 queries", total=3, unit="query") as bar:
    ...     bar.update(3)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

QUIET_ENVIRONMENT = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
                     "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Read by transformers / huggingface_hub when they load: no weight-loading bars, no advice.
Setting them is the command line's business (it owns its process), not a library's."""
QUIET_LOGGERS = ("transformers", "sentence_transformers", "huggingface_hub", "faiss", "bm25s",
                 "jnius", "pyserini", "urllib3", "httpx", "numba", "matplotlib", "accelerate")
_state = {"verbose": False}


class _DropFaissAvxLookup(logging.Filter):
    """FAISS logs its failed import of the AVX-512 build at INFO with the exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Could not load library with AVX" not in record.getMessage()


def configure(verbose: bool) -> None:
    """Set up logging for a command: INFO with ``-v``, else WARNING, libraries quieter."""
    _state["verbose"] = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    logging.getLogger("faiss.loader").addFilter(_DropFaissAvxLookup())
    if verbose:
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning,
                            module=r"(transformers|torch|sentence_transformers)")


def verbose() -> bool:
    """Whether ``-v`` was given (libraries may then show their own output)."""
    return _state["verbose"]


@contextmanager
def progress(label: str, total: int | None = None, unit: str = "it") -> Iterator[Any]:
    """A progress bar on stderr labelled with what is being done; a bar object with
    ``update(n)``. Hidden when stderr is not a terminal (logs and tests stay clean) unless
    ``-v`` asked for details, where the label is logged instead."""
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    if not interactive:
        logging.getLogger("cormorant").info("%s", label)
    with tqdm(total=total, desc=label, unit=unit, file=sys.stderr, disable=not interactive,
              leave=False, dynamic_ncols=True, unit_scale=total is not None and total > 10_000
              ) as bar:
        yield bar
