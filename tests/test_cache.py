"""The one on-disk cache: keys, atomic writes, LRU eviction under a limit, info and prune."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cormorant import cache
from cormorant.cli import app
from cormorant.errors import CormorantError


def put(kind: str, name: str, size: int, used: float | None = None) -> Path:
    """A file entry of ``size`` bytes, last used at ``used`` (seconds since the epoch)."""
    with cache.write(kind, name) as tmp:
        tmp.write_bytes(b"x" * size)
    path = cache.entry(kind, name)
    if used is not None:
        os.utime(path, (used, used))
    return path


def test_least_recently_used_entry_goes_first(isolated_cache, monkeypatch):
    monkeypatch.setenv(cache.LIMIT_ENV, "2500")
    old = time.time() - 3600
    a = put("embeddings", "a.npy", 1000, used=old)
    b = put("runs", "b", 1000, used=old + 1)
    assert cache.lookup("embeddings", "a.npy") == a  # a hit: a is now the most recent
    c = put("teacher", "c.npy", 1000)  # 3000 bytes > 2500: one entry must go
    assert a.exists() and c.exists()
    assert not b.exists()
    assert sum(e.size for e in cache.entries()) == 2000


def test_limit_is_read_at_call_time_and_new_entry_is_kept(isolated_cache, monkeypatch):
    monkeypatch.delenv(cache.LIMIT_ENV, raising=False)
    assert cache.size_limit() == cache.DEFAULT_LIMIT == 20 * 1024**3
    first = put("runs", "first", 600)
    monkeypatch.setenv(cache.LIMIT_ENV, "500")
    big = put("runs", "big", 800)  # larger than the limit alone: kept, everything else goes
    assert big.exists() and not first.exists()
    monkeypatch.setenv(cache.LIMIT_ENV, "none")
    assert cache.size_limit() is None
    monkeypatch.setenv(cache.LIMIT_ENV, "lots")
    with pytest.raises(CormorantError, match="CORMORANT_CACHE_LIMIT"):
        cache.size_limit()


def test_no_partial_entry_is_ever_visible(isolated_cache):
    with cache.write("tokens", "store", directory=True) as tmp:
        (tmp / "tokens.npy").write_bytes(b"\0" * 100)
        # Half written: neither a lookup nor info sees the entry.
        assert cache.lookup("tokens", "store") is None
        assert cache.entries() == []
        assert cache.info().partial == 1
    assert (cache.lookup("tokens", "store") / "tokens.npy").stat().st_size == 100

    with pytest.raises(KeyboardInterrupt), cache.write("embeddings", "e.npy") as tmp:
        tmp.write_bytes(b"\0" * 100)
        raise KeyboardInterrupt  # a crash mid-write
    assert cache.lookup("embeddings", "e.npy") is None
    assert os.listdir(isolated_cache / "embeddings") == []  # the temporary went too


def test_rewriting_a_folder_entry_replaces_it_whole(isolated_cache):
    for text in ("old", "new"):
        with cache.write("models", "m", directory=True) as tmp:
            (tmp / text).write_text(text)
    assert sorted(os.listdir(cache.entry("models", "m"))) == ["new"]


def test_key_and_sizes():
    assert cache.key({"a": 1, "b": [1, 2]}) == cache.key({"b": [1, 2], "a": 1})
    assert cache.key({"a": 1}) != cache.key({"a": 2})
    assert len(cache.key("x")) == 24 and len(cache.key("x", length=64)) == 64
    assert cache.parse_size("500M") == 500 * 1024**2
    assert cache.parse_size("1.5GiB") == 1536 * 1024**2
    assert cache.format_size(8 * 1024**2) == "8.0 MiB"
    with pytest.raises(ValueError):
        cache.entry("runs", "../escape")


def test_legacy_generation_store_is_moved_in(isolated_cache):
    from cormorant.llm.cache import default_store

    isolated_cache.mkdir()
    with sqlite3.connect(isolated_cache / "generations.sqlite") as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (42)")
    store = default_store()
    assert store == isolated_cache / "generations" / "default" / "generations.sqlite"
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(42,)]
    assert not (isolated_cache / "generations.sqlite").exists()


def cli(*args: str):
    result = CliRunner().invoke(app, ["cache", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_cache_info_and_prune_from_the_cli(isolated_cache, monkeypatch):
    monkeypatch.setenv(cache.LIMIT_ENV, "1G")
    old = time.time() - 3600
    put("embeddings", "a.npy", 3000, used=old)
    put("embeddings", "b.npy", 2000, used=old + 1)
    put("runs", "r", 1000, used=old + 2)

    shown = cli("info").output
    assert f"root   {isolated_cache}" in shown
    assert "limit  1.0 GiB" in shown
    assert any(line.split()[:2] == ["embeddings", "2"] and "4.9 KiB" in line
               for line in shown.splitlines())
    assert any(line.split()[:2] == ["runs", "1"] for line in shown.splitlines())
    assert any(line.split()[:3] == ["total", "3", "5.9"] for line in shown.splitlines())

    assert "removed 0 entries" in cli("prune").output  # under the 1G limit: nothing goes
    pruned = cli("prune", "--max-size", "3500").output  # a (least recent) must go
    assert "removed 1 entries" in pruned
    assert {e.path.name for e in cache.entries()} == {"b.npy", "r"}

    assert "removed 1 entries" in cli("prune", "--kind", "runs", "--all").output
    assert {e.path.name for e in cache.entries()} == {"b.npy"}
    cli("prune", "--all")
    assert cache.entries() == []


def test_cli_prune_refuses_bad_options(isolated_cache):
    result = CliRunner().invoke(app, ["cache", "prune", "--kind", "nope"])
    assert isinstance(result.exception, CormorantError)
    assert "unknown cache kind 'nope'" in str(result.exception)
    result = CliRunner().invoke(app, ["cache", "prune", "--all", "--max-size", "1G"])
    assert isinstance(result.exception, CormorantError)


def test_rooted_points_only_its_own_block_at_a_root_and_leaves_the_environment(tmp_path):
    import threading

    before = cache.root()
    env = os.environ.get(cache.ROOT_ENV)
    seen_elsewhere = []
    with cache.rooted(tmp_path / "shared"):
        assert cache.root() == tmp_path / "shared"
        assert os.environ.get(cache.ROOT_ENV) == env  # nothing another thread or child reads
        other = threading.Thread(target=lambda: seen_elsewhere.append(cache.root()))
        other.start()
        other.join()
    assert seen_elsewhere == [before]
    assert cache.root() == before
