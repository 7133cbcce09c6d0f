"""Service settings: a YAML file, then environment variables, then explicit overrides.

Precedence, highest first: keyword arguments (the CLI's flags), ``CORMORANT_SERVICE_*``
environment variables (nested fields with ``__``), the YAML file named by ``--config`` or
``CORMORANT_SERVICE_CONFIG``, the defaults below.

Example:
    >>> settings = load_settings(None, indexes={"demo": "indexes/demo"})  # doctest: +SKIP
    >>> settings.indexes["demo"].path  # doctest: +SKIP
    PosixPath('indexes/demo')

A YAML file::

    indexes:
      scifact:
        path: /indexes/scifact
        pipelines: ["dense", "bm25", "rrf(bm25, dense)"]   # allowed in requests
    api_keys:
      - name: search-app
        sha256: 5e884898da28...   # cormorant serve --hash-key < keyfile
        scopes: [read]
    open_reads: false
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cormorant.errors import CormorantError

CONFIG_ENV = "CORMORANT_SERVICE_CONFIG"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Scope = Literal["read", "write", "admin"]
_config_file: ContextVar[Path | None] = ContextVar("cormorant_service_config", default=None)


class IndexConfig(BaseModel):
    """One served index: its directory and the pipelines requests may ask for."""

    path: Path
    pipelines: list[str] = Field(default_factory=list, description=(
        "Pipeline strings requests may name besides the index's own (the allow-list)."))

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value: Any) -> Any:
        # `name: /path` is shorthand for `name: {path: /path}`.
        return {"path": value} if isinstance(value, str | Path) else value


class ApiKey(BaseModel):
    """An API key, stored only as the SHA-256 hex digest of the secret."""

    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope] = Field(default_factory=lambda: ["read"])


class Limits(BaseModel):
    """What one request may ask for; anything beyond is a 4xx before any work is done."""

    max_k: int = Field(1000, ge=1, le=100_000)
    max_batch: int = Field(64, ge=1, le=10_000)
    max_query_chars: int = Field(2048, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_documents_per_write: int = Field(256, ge=1)
    max_document_chars: int = Field(200_000, ge=1)
    max_id_chars: int = Field(256, ge=1)
    # The answer is bounded as well as the question: each title and text is cut to
    # max_text_chars (a request's text_chars asks for fewer), and all of them together to
    # max_response_text_chars, shared evenly by the hits. The heaviest request then answers
    # about 8 MB (64 x 1,000 hits and 2 M characters of text), not the 111 MB that 64 x 1,000
    # whole texts made.
    max_text_chars: int = Field(2_000, ge=1)
    max_response_text_chars: int = Field(2_000_000, ge=1)
    # Per API key (or per client address with open reads): searches, document reads and writes
    # in flight, and requests per second with a burst. 4 of the 16 search threads means one
    # key, however busy, leaves three quarters of them to the others; beyond it a 429 with
    # Retry-After tells the client to back off instead of queueing behind its own work. The
    # rate is a guard against a runaway loop, not a quota: 1,000/s (burst 2,000) lets a script
    # read back documents one request at a time, which 50/s made fail after two seconds.
    max_in_flight_per_key: int = Field(4, ge=1)
    requests_per_second_per_key: float = Field(1000.0, gt=0)
    burst_per_key: int = Field(2000, ge=1)


class MicroBatching(BaseModel):
    """Concurrent queries wait up to ``max_wait_ms`` to share one encoder call."""

    enabled: bool = True
    max_wait_ms: float = Field(2.0, ge=0, le=10_000)
    max_batch_size: int = Field(32, ge=1, le=4096)


class ServiceSettings(BaseSettings):
    """Everything the service reads at start-up."""

    model_config = SettingsConfigDict(env_prefix="CORMORANT_SERVICE_", env_nested_delimiter="__",
                                      extra="forbid")

    indexes: dict[str, IndexConfig] = Field(default_factory=dict)
    api_keys: list[ApiKey] = Field(default_factory=list)
    open_reads: bool = Field(False, description="Searches and reads need no key.")
    limits: Limits = Field(default_factory=Limits)
    micro_batching: MicroBatching = Field(default_factory=MicroBatching)
    search_threads: int = Field(16, ge=1, le=512)
    request_timeout_s: float = Field(30.0, gt=0)
    verify_checksums: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("indexes")
    @classmethod
    def _names(cls, value: dict[str, IndexConfig]) -> dict[str, IndexConfig]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"index name {name!r} must match {NAME_PATTERN}")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get() or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV)
                                      else None)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(_YamlSource(settings_cls, path))
        return tuple(sources)


class _YamlSource(PydanticBaseSettingsSource):
    """The YAML file's top-level mapping, with a clear error for a missing or broken file."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.data = read_yaml(path)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; relative index paths resolve against the file."""
    from cormorant.data.files import read_text_file, yaml_problem

    try:
        data = yaml.safe_load(read_text_file(path, "config file")) or {}
    except yaml.YAMLError as exc:
        raise CormorantError(f"config file {path} is not valid YAML at {yaml_problem(exc)}"
                             ) from None
    if not isinstance(data, dict):
        raise CormorantError(f"config file {path} must hold a mapping of settings")
    if isinstance(data.get("indexes"), dict):
        data["indexes"] = {name: _resolve_against(entry, path.parent)
                           for name, entry in data["indexes"].items()}
    return data


def _resolve_against(entry: Any, base: Path) -> Any:
    """An index entry (``path`` or ``{path: ...}``) with a relative path made absolute."""
    if isinstance(entry, str) and not Path(entry).is_absolute():
        return str(base / entry)
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):
        if not Path(entry["path"]).is_absolute():
            return {**entry, "path": str(base / entry["path"])}
    return entry


def load_settings(config: Path | None = None, extra_indexes: dict[str, str] | None = None,
                  **overrides: Any) -> ServiceSettings:
    """Settings from ``config`` (YAML), the environment and ``overrides``; ``extra_indexes``
    (name -> path, the CLI's ``--index``) are added to the configured ones.

    Raises:
        CormorantError: the file is missing or malformed, or a value is invalid; the message
        names each bad field.
    """
    token = _config_file.set(config)
    try:
        settings = ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
        if extra_indexes:
            # --index NAME=PATH adds to (or replaces by name) the indexes of the file.
            merged = {**{n: c.model_dump() for n, c in settings.indexes.items()},
                      **{n: {"path": p} for n, p in extra_indexes.items()}}
            settings = ServiceSettings(**{**{k: v for k, v in overrides.items() if v is not None},
                                           "indexes": merged})
        return settings
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors())
        raise CormorantError(f"invalid service settings: {problems}") from None
    finally:
        _config_file.reset(token)
