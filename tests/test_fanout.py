"""The router calls its shards at once (``retrieval/fanout.py``): a behaviour test with shard
parts that sleep and record when each call starts and ends (no assertion on speed)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from cormorant.index.sharding import shard_of
from cormorant.pipeline import Flow
from cormorant.retrieval.bm25 import BM25Retriever
from cormorant.retrieval.fanout import fan_out
from cormorant.retrieval.sharded import ShardedStage
from cormorant.types import Corpus, Document

TEXTS = ["cats purr", "dogs bark", "cats and dogs", "birds sing", "cats chase birds",
         "dogs chase cats", "fish swim", "birds and fish"]
PAUSE_S = 0.2


class Recorder:
    """(call, shard, start, end) of every call, from whichever thread makes it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float, float]] = []
        self.lock = threading.Lock()

    def timed(self, name: str, shard: int, call: Any) -> Any:
        start = time.monotonic()
        time.sleep(PAUSE_S)  # a slow shard: the call's own work comes after the wait
        answer = call()
        with self.lock:
            self.calls.append((name, shard, start, time.monotonic()))
        return answer

    def overlapped(self, name: str) -> bool:
        """Every call named ``name`` started before any of them finished."""
        spans = [(s, e) for n, _, s, e in self.calls if n == name]
        return len(spans) > 1 and max(s for s, _ in spans) < min(e for _, e in spans)


class SlowPart:
    """One shard's BM25 part, each router call delayed and recorded."""

    def __init__(self, part: BM25Retriever, shard: int, recorder: Recorder,
                 thread_safe: bool = True) -> None:
        self.part, self.shard, self.recorder = part, shard, recorder
        self.name, self.settings = part.name, part.settings
        self.thread_safe = thread_safe

    def spec(self) -> Any:
        return self.part.spec()

    def statistics(self, queries: Any) -> Any:
        return self.recorder.timed("statistics", self.shard,
                                   lambda: self.part.statistics(queries))

    def with_statistics(self, statistics: Any) -> SlowPart:
        return SlowPart(self.part.with_statistics(statistics), self.shard, self.recorder,
                        self.thread_safe)

    def transform(self, flow: Flow) -> Flow:
        stage = "rank" if flow.run is None else "rescore"
        return self.recorder.timed(stage, self.shard, lambda: self.part.transform(flow))


def shards(count: int, thread_safe: bool = True) -> tuple[BM25Retriever, ShardedStage, Recorder]:
    docs = [Document(f"d{i}", TEXTS[i % len(TEXTS)]) for i in range(24)]
    whole = BM25Retriever.build(Corpus.from_documents(docs))
    recorder = Recorder()
    parts = [SlowPart(whole.part(lambda d, s=s: shard_of(d, count) == s), s, recorder,
                      thread_safe) for s in range(count)]
    return whole, ShardedStage(parts), recorder


def test_every_step_calls_all_shards_at_once_and_answers_as_one_index() -> None:
    whole, sharded, recorder = shards(3)
    queries = {"q1": "cats dogs", "q2": "birds fish"}
    assert sharded.search(queries, k=5) == whole.search(queries, k=5)
    assert sorted(s for n, s, _, _ in recorder.calls if n == "rank") == [0, 1, 2]
    assert recorder.overlapped("statistics")
    assert recorder.overlapped("rank")
    # The ranking starts only once every shard's statistics are summed.
    last_count = max(e for n, _, _, e in recorder.calls if n == "statistics")
    assert min(s for n, _, s, _ in recorder.calls if n == "rank") >= last_count


def test_rescoring_sends_candidates_to_their_shards_at_once() -> None:
    whole, sharded, recorder = shards(2)
    candidates = whole.search({"q": "cats"}, k=8)
    flow = Flow.start({"q": "cats"})
    rescored = sharded.transform(flow.with_run(candidates)).run
    assert rescored == whole.transform(flow.with_run(candidates)).run
    assert recorder.overlapped("rescore")


def test_parts_not_thread_safe_are_called_one_after_another() -> None:
    whole, sharded, recorder = shards(2, thread_safe=False)
    assert sharded.search({"q": "cats"}, k=3) == whole.search({"q": "cats"}, k=3)
    ranks = sorted((s, e) for n, _, s, e in recorder.calls if n == "rank")
    assert ranks[1][0] >= ranks[0][1]
    assert not recorder.overlapped("statistics")


def test_fan_out_keeps_order_waits_for_all_and_raises_the_first_error() -> None:
    finished: list[int] = []

    def slow(i: int) -> int:
        time.sleep(0.05 * (3 - i))
        finished.append(i)
        return i * 10

    assert fan_out([lambda i=i: slow(i) for i in range(3)]) == [0, 10, 20]

    def fail() -> int:
        raise ValueError("shard 1 is down")

    finished.clear()
    with pytest.raises(ValueError, match="shard 1 is down"):
        fan_out([lambda: slow(0), fail, lambda: slow(2)])
    assert sorted(finished) == [0, 2]  # no call left running behind the error


def test_fan_out_from_inside_the_pool_runs_inline() -> None:
    outer_threads = fan_out([lambda: fan_out([threading.get_ident, threading.get_ident])
                             for _ in range(2)])
    for inner in outer_threads:
        assert inner[0] == inner[1]  # the inner calls ran in the calling pool thread


def test_in_process_bm25_shards_are_called_in_this_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # BM25's scoring holds the GIL: the router skips the pool for it (overlaps = False),
    # while a part that does not say so (a served shard, SlowPart) is fanned out.
    import cormorant.retrieval.sharded as sharded

    asked: list[bool] = []

    def recording(calls: Any, parallel: bool = True) -> list[Any]:
        asked.append(parallel)
        return fan_out(calls, parallel)

    monkeypatch.setattr(sharded, "fan_out", recording)
    whole, slow, _ = shards(2)
    plain = ShardedStage([p.part for p in slow.parts])
    assert plain.search({"q": "cats"}, k=3) == whole.search({"q": "cats"}, k=3)
    assert asked and not any(asked)
    asked.clear()
    slow.search({"q": "cats"}, k=3)
    assert asked and all(asked)
