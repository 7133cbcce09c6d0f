"""Service fixtures: a tiny two-stage index (BM25 + dense with a tiny random encoder), API keys
for each scope, and a TestClient through the app factory that waits until the index is ready."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_beir

pytest.importorskip("fastapi")

READ_KEY, WRITE_KEY, ADMIN_KEY, ALL_KEY = "read-key-0123", "write-key-4567", "admin-key-89ab", "all-key-cdef"


def key_config() -> list[dict[str, Any]]:
    from cormorant.service.auth import hash_key

    return [{"name": "reader", "sha256": hash_key(READ_KEY), "scopes": ["read"]},
            {"name": "writer", "sha256": hash_key(WRITE_KEY), "scopes": ["write"]},
            {"name": "ops", "sha256": hash_key(ADMIN_KEY), "scopes": ["admin"]},
            {"name": "all", "sha256": hash_key(ALL_KEY), "scopes": ["read", "write", "admin"]}]


PIPELINE = "rrf(bm25, dense(model={model}))"


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """rrf(bm25, dense) over the six-document collection, built once per session."""
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import save_index

    root = tmp_path_factory.mktemp("service-index")
    corpus = load_dataset(write_beir(root / "tiny")).corpus
    return save_index(PIPELINE.format(model=tiny_encoder), corpus, root / "index")


@pytest.fixture
def index_dir(built_index: Path, tmp_path: Path) -> Path:
    """A private copy of the built index, so live writes stay in one test."""
    return Path(shutil.copytree(built_index, tmp_path / "index"))


ALLOWED = ["bm25", "dense", "bm25 % 3 >> dense"]


def settings_for(index_dir: Path, pipelines: list[str] | None = None, **overrides: Any) -> Any:
    from cormorant.service import load_settings

    allowed = ALLOWED if pipelines is None else pipelines
    config = {"indexes": {"tiny": {"path": str(index_dir), "pipelines": allowed}},
              "api_keys": key_config(), **overrides}
    return load_settings(None, **config)


@contextmanager
def client_for(settings: Any, ready: bool = True) -> Iterator[Any]:
    """A TestClient through ``create_app`` (lifespan running), ready to search."""
    from fastapi.testclient import TestClient

    from cormorant.service import create_app

    with TestClient(create_app(settings)) as client:
        if ready:
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline and not client.app.state.service.failed, \
                    client.get("/readyz").json()
                time.sleep(0.05)
        yield client


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}
