"""Property-based fuzz of the OpenAPI document against a real server on 127.0.0.1: no 500s.

Schemathesis generates valid and invalid requests for every operation (bodies, path
parameters, headers) from the service's own /openapi.json. Bounded: 25 cases per operation and phase,
at most 60 seconds (about 5,000 requests), one worker, on loopback only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.service.conftest import ALL_KEY, ALLOWED, key_config
from tests.service.server import ServerProcess


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_500(tmp_path, index_dir):
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("schemathesis is not installed (the [dev] extra)")
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump({
        "indexes": {"tiny": {"path": str(index_dir), "pipelines": ALLOWED}},
        # Documents small enough that a schema-valid PUT (up to 256 of them, each field at most
        # max_document_chars, as the OpenAPI document states) mostly fits the body limit:
        # otherwise nearly every generated PUT is a 413 and schemathesis's health check stops.
        "api_keys": key_config(), "limits": {"max_body_bytes": 200_000,
                                             "max_document_chars": 200}}))
    with ServerProcess(config, tmp_path / "server.log") as server:
        done = subprocess.run(
            [binary, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", "25", "--max-time", "60", "--workers", "1", "--seed", "7",
             "--phases", "examples,coverage,fuzzing", "--request-timeout", "30",
             "--header", f"X-API-Key: {ALL_KEY}", "--generation-database", "none",
             "--report-dir", str(tmp_path / "report")],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
        log = server.log()
    output = done.stdout[-4000:]
    assert done.returncode == 0, output + done.stderr[-2000:] + log
    access = Path(tmp_path / "server.log").read_text()
    assert '"status":200' in access  # the access log is there, so its absence of 500s means something
    assert '"status":500' not in access
