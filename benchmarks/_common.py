"""Helpers shared by the benchmark scripts: arguments, timing and atomic JSON output.

Import this module before any model or index library: it pins the environment every benchmark
needs (no network for Hugging Face; no tokenizer thread pool competing with the measured work).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # model-loading bars clutter the summary

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--out`` and ``--repeats``."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    args.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / default_out,
                      help="JSON file to write (default: %(default)s)")
    args.add_argument("--repeats", type=int, default=None,
                      help="timed runs per measurement, after one warm-up (default: 3 quick, 5 full)")
    return args


def repeats(args: argparse.Namespace) -> int:
    """Timed runs per measurement: ``--repeats`` if given, else 3 with ``--quick`` and 5 without."""
    if args.repeats is not None:
        return max(1, args.repeats)
    return 3 if args.quick else 5


def dataset_path(name: str) -> Path:
    """The shared copy if present, else the bundled demo collection (SciFact only)."""
    shared = SHARED / name
    return shared if shared.is_dir() else REPO / "data" / name


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int,
                warmup: bool = True) -> dict[str, list[float]]:
    """Wall seconds of each function over ``repeats`` rounds, after one warm-up of each.

    Each round runs every function once in turn (A, B, A, B, ...), so drift in the machine's
    speed (thermal, other load) hits all of them alike. Pass ``warmup=False`` when the caller
    has warmed up more cheaply itself.
    """
    if warmup:
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def keeping(outputs: dict[str, Any], name: str, fn: Callable[[], Any]) -> Callable[[], None]:
    """``fn`` as a timed step that keeps its latest result in ``outputs[name]`` for checks after."""

    def call() -> None:
        outputs[name] = fn()

    return call


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()``'s result and the wall seconds it took (one run, no warm-up: for builds)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def summary(samples: list[float], items: int) -> dict[str, Any]:
    """Median, spread and rate (``items`` per median second) of timing samples."""
    median = statistics.median(samples)
    return {"per_s": items / median, "median_s": median, "min_s": min(samples),
            "max_s": max(samples), "samples_s": samples}


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was (load above 0 means other work)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor() or None,
            "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]}


def memory_gb(field: str = "VmHWM") -> float | None:
    """This process's resident memory from /proc/self/status, in GB: ``VmHWM`` (the peak
    since the last :func:`reset_peak_memory`) or ``VmRSS`` (now); None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def reset_peak_memory() -> None:
    """Restart ``VmHWM`` from the current resident size (Linux: ``5`` into clear_refs), so
    several builds in one process each get their own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def earlier(path: Path) -> dict[str, Any]:
    """What an earlier run wrote to ``path`` (empty when there is none), so that a run over some
    datasets or parts keeps the others' results."""
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus machine details) to ``path`` atomically: temp file, then rename."""
    payload = {"machine": machine(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would outlive the rename
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {path}")
