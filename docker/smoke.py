"""Run what the service image runs, outside Docker (no Docker engine on these machines).

Reads ``docker/service.Dockerfile``: its ``ENV`` settings, its ``CMD`` and its
``HEALTHCHECK``, then starts that command against an index on 127.0.0.1 (the only changes:
loopback instead of 0.0.0.0, a free port, the config file from the repository instead of
``/etc/cormorant``), waits for the health check to pass, writes a document, searches for it,
reads /metrics, and stops the server with SIGTERM as ``docker stop`` does.

    .venv/bin/python docker/smoke.py [INDEX_DIR]   # default: bm25 over the bundled SciFact

Exit status 0 when every step worked; otherwise one line saying which failed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "service.Dockerfile"


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in dockerfile_instructions():
        if name == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(args))
    return env


def image_json(name: str) -> list[str]:
    """The JSON-array form of CMD, or of HEALTHCHECK's CMD."""
    for instruction, args in dockerfile_instructions():
        if instruction == name:
            return json.loads(args[args.index("["):])
    raise SystemExit(f"smoke: {DOCKERFILE} has no {name}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, key: str, method: str = "GET", body: object | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def main(index: Path | None) -> int:
    bin_dir = str(Path(sys.executable).parent)
    work = Path(tempfile.mkdtemp(prefix="cormorant-smoke-"))
    try:
        if index is None:
            index = work / "demo"
            subprocess.run([f"{bin_dir}/cormorant", "index", "build", "--dataset",
                            str(ROOT / "data" / "scifact"), "--pipeline", "bm25", "--out",
                            str(index)], check=True)
        else:
            index = Path(shutil.copytree(index, work / "demo"))  # live writes stay in the copy
        port, key = free_port(), "smoke-" + os.urandom(8).hex()
        digest = subprocess.run([f"{bin_dir}/cormorant", "serve", "--hash-key"], input=key,
                                capture_output=True, text=True, check=True).stdout.strip()
        env = {**os.environ, **image_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}",
               "CORMORANT_SERVICE_CONFIG": str(ROOT / "docker" / "service.yaml"),
               "CORMORANT_SERVICE_HOST": "127.0.0.1", "CORMORANT_SERVICE_PORT": str(port),
               "CORMORANT_SERVICE_INDEXES": json.dumps({"demo": str(index)}),
               "CORMORANT_SERVICE_API_KEYS": json.dumps(
                   [{"name": "smoke", "sha256": digest, "scopes": ["read", "write", "admin"]}])}
        if "CORMORANT_CACHE" in os.environ:
            env["CORMORANT_CACHE"] = os.environ["CORMORANT_CACHE"]
        server = subprocess.Popen(image_json("CMD"), env=env)
        try:
            return _exercise(server, env, f"http://127.0.0.1:{port}", key)
        finally:
            if server.poll() is None:
                server.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _exercise(server: subprocess.Popen[bytes], env: dict[str, str], url: str, key: str) -> int:
    health = [sys.executable if part == "python" else part for part in image_json("HEALTHCHECK")]
    deadline = time.monotonic() + 300
    while subprocess.run(health, env=env, capture_output=True).returncode != 0:
        if server.poll() is not None or time.monotonic() > deadline:
            print("smoke: the health check never passed", file=sys.stderr)
            return 1
        time.sleep(0.5)
    doc = {"doc_id": "smoke-1", "title": "Smoke", "text": "zymurgy of cormorant smoke tests"}
    status, _ = call(f"{url}/v1/indexes/demo/documents", key, "PUT", {"documents": [doc]})
    _, body = call(f"{url}/v1/indexes/demo/search", key, "POST",
                   {"query": "zymurgy cormorant smoke", "k": 3})
    top = json.loads(body)["results"][0]["hits"][0]["doc_id"]
    _, metrics = call(f"{url}/metrics", key)
    server.send_signal(signal.SIGTERM)
    code = server.wait(60)
    checks = {"write answered 200": status == 200, "written document found first": top == "smoke-1",
              "metrics served": b"cormorant_requests_total" in metrics,
              "clean stop on SIGTERM": code in (0, -signal.SIGTERM)}
    for name, ok in checks.items():
        print(f"smoke: {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
