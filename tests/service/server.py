"""A real ``cormorant serve`` process on 127.0.0.1 for tests: start, wait until ready, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``cormorant serve --config CONFIG`` on a free loopback port."""

    def __init__(self, config: Path, log: Path, port: int | None = None,
                 factory: bool = False) -> None:
        self.config, self.log_path, self.factory = config, log, factory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> ServerProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.factory:  # uvicorn's own command line and the app factory, settings from env
            env["CORMORANT_SERVICE_CONFIG"] = str(self.config)
            command = [sys.executable, "-m", "uvicorn", "--factory", "cormorant.service:create_app",
                       "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]
        else:
            command = [sys.executable, "-m", "cormorant.cli", "serve", "--config", str(self.config),
                       "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2)
            except httpx.HTTPError:
                ready = None
            if ready is not None and ready.status_code == 200:
                return self
            if ready is not None and ready.json().get("status") == "failed":
                self.kill()
                raise RuntimeError(f"server failed to load: {ready.json().get('detail')}")
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server not ready in {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for a graceful exit; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
