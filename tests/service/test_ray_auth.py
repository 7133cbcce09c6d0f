"""``serve --ray``'s side of Ray's token authentication (set before Ray is imported, never
silently off) and the options that need --ray; none of it imports Ray."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cormorant.errors import CormorantError
from cormorant.service.ray_auth import token_auth
from tests.cli_support import assert_one_error_line, run_cli


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    return monkeypatch


def test_an_unset_mode_becomes_token_and_a_local_cluster_gets_a_token(clean_env):
    import os

    token_auth("local")
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert len(os.environ["RAY_AUTH_TOKEN"]) == 64


def test_joining_a_cluster_without_a_token_is_refused(clean_env):
    with pytest.raises(CormorantError, match="RAY_AUTH_TOKEN"):
        token_auth("auto")


def test_a_token_file_is_enough_to_join(clean_env, tmp_path):
    import os

    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 64)
    token_auth("10.0.0.1:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" not in os.environ


def test_a_mode_set_otherwise_is_kept_and_warned_about(clean_env, caplog):
    import os

    clean_env.setenv("RAY_AUTH_MODE", "disabled")
    with caplog.at_level(logging.WARNING, "cormorant.service.ray_auth"):
        token_auth("auto")
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert "authentication is off" in caplog.text


def test_replica_options_need_ray(index_dir):
    result = run_cli("serve", "--index", f"tiny={index_dir}", "--replicas", "2")
    assert_one_error_line(result, "--replicas and --replica-cpus need --ray")


def test_serving_and_its_shard_clients_load_no_ray():
    code = ("import sys, cormorant.cli, cormorant.service.app, cormorant.service.shard_client,"
            " cormorant.service.shard_server, cormorant.service.ray_auth;"
            " assert 'ray' not in sys.modules, 'ray'")
    subprocess.run([sys.executable, "-c", code], check=True)
