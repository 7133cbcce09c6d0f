"""Settings from YAML, environment and flags; auth helpers; micro-batching of encoder calls."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cormorant.errors import CormorantError
from cormorant.service.auth import KeyRing, hash_key, new_key
from cormorant.service.batching import BatchingEncoder
from cormorant.service.settings import ApiKey, load_settings


def test_yaml_then_env_then_flags(tmp_path, monkeypatch):
    config = tmp_path / "conf" / "service.yaml"
    config.parent.mkdir()
    config.write_text("indexes:\n  a: idx/a\n  b: {path: /abs/b, pipelines: [bm25]}\n"
                      "open_reads: true\nport: 9000\nlimits: {max_k: 77}\n"
                      "micro_batching: {max_wait_ms: 5}\n")
    settings = load_settings(config)
    assert settings.indexes["a"].path == tmp_path / "conf" / "idx" / "a"  # relative to the file
    assert settings.indexes["b"].pipelines == ["bm25"] and settings.open_reads
    assert (settings.port, settings.limits.max_k, settings.micro_batching.max_wait_ms) == (9000, 77, 5)

    monkeypatch.setenv("CORMORANT_SERVICE_PORT", "9100")
    monkeypatch.setenv("CORMORANT_SERVICE_LIMITS__MAX_K", "88")
    settings = load_settings(config)
    assert (settings.port, settings.limits.max_k) == (9100, 88)
    assert load_settings(config, port=9200).port == 9200

    both = load_settings(config, extra_indexes={"c": str(tmp_path), "a": "/new/a"})
    assert set(both.indexes) == {"a", "b", "c"} and str(both.indexes["a"].path) == "/new/a"


def test_config_file_from_the_environment(tmp_path, monkeypatch):
    config = tmp_path / "s.yaml"
    config.write_text("port: 8123\n")
    monkeypatch.setenv("CORMORANT_SERVICE_CONFIG", str(config))
    assert load_settings().port == 8123


@pytest.mark.parametrize(("text", "message"), [
    ("port: [1\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "must hold a mapping"),
    ("colour: red\n", "colour: Extra inputs are not permitted"),
    ("limits: {max_k: 0}\n", "limits.max_k"),
    ("indexes: {'bad name': /x}\n", "must match"),
    ("api_keys: [{name: a, sha256: nothex}]\n", "api_keys.0.sha256"),
    ("api_keys: [{name: a, sha256: " + "a" * 64 + ", scopes: [root]}]\n", "scopes"),
])
def test_bad_settings_say_what_is_wrong(tmp_path, text, message):
    config = tmp_path / "s.yaml"
    config.write_text(text)
    with pytest.raises(CormorantError, match=message.replace("[", r"\[")):
        load_settings(config)


def test_missing_config_file():
    with pytest.raises(CormorantError, match="config file not found"):
        load_settings(__import__("pathlib").Path("/no/such.yaml"))


def test_keys_are_matched_by_hash_only():
    key = new_key()
    ring = KeyRing([ApiKey(name="app", sha256=hash_key(key), scopes=["read", "write"])])
    assert ring.identify(key).name == "app"
    assert ring.identify(key + "x") is None and ring.identify("") is None
    assert ring.identify(None) is None and len(key) >= 43


class CountingEncoder:
    dim = 3

    def __init__(self, delay: float = 0.05) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.active = 0
        self.overlap = False

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        self.active += 1
        self.overlap |= self.active > 1
        self.calls.append(len(texts))
        time.sleep(self.delay)
        self.active -= 1
        if "boom" in texts:
            raise ValueError("boom")
        return np.array([[len(t), i, 0] for i, t in enumerate(texts)], dtype=np.float32)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.encode_queries(texts)


def _concurrently(encoder: BatchingEncoder, groups: list[list[str]]) -> list[object]:
    results: list[object] = [None] * len(groups)

    def run(i: int) -> None:
        try:
            results[i] = encoder.encode_queries(groups[i])
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(groups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_queries_share_encoder_calls():
    inner = CountingEncoder()
    groups = [[f"q{i}" * (i + 1)] for i in range(8)] + [["a", "bb"]]
    encoder = BatchingEncoder(inner, max_wait_ms=200, max_batch=32, in_flight=lambda: len(groups))
    results = _concurrently(encoder, groups)
    assert sum(inner.calls) == 10 and len(inner.calls) < len(groups)  # batched
    for group, vectors in zip(groups, results, strict=True):
        assert [row[0] for row in vectors] == [len(t) for t in group]  # each caller its own rows
    assert not inner.overlap and encoder.dim == 3
    encoder.close()


def test_batch_size_cap_errors_and_disabled_mode():
    inner = CountingEncoder(delay=0.01)
    encoder = BatchingEncoder(inner, max_wait_ms=100, max_batch=2, in_flight=lambda: 6)
    _concurrently(encoder, [[f"q{i}"] for i in range(6)])
    assert max(inner.calls) <= 2
    failed = _concurrently(encoder, [["boom"], ["fine"]])
    assert any(isinstance(r, ValueError) for r in failed)
    assert encoder.encode_queries(["after"]).shape == (1, 3)  # the batcher lives on
    encoder.close()

    alone = CountingEncoder(delay=0.02)
    plain = BatchingEncoder(alone, enabled=False)
    _concurrently(plain, [[f"q{i}"] for i in range(4)])
    assert alone.calls == [1, 1, 1, 1] and not alone.overlap  # one at a time, never merged


def test_a_lone_request_does_not_wait():
    encoder = BatchingEncoder(CountingEncoder(delay=0), max_wait_ms=2000, in_flight=lambda: 1)
    start = time.perf_counter()
    encoder.encode_queries(["alone"])
    assert time.perf_counter() - start < 0.5
    encoder.close()
