"""The API pages work offline, and a service no key can read says so at start-up (issue 28)."""

import logging
import shutil
import subprocess
import sys

import httpx
import pytest

from tests.conftest import write_beir
from tests.service.server import free_port


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`cormorant serve --index tiny=DIR --open-reads` (no config, no key) on a free port."""
    root = tmp_path_factory.mktemp("docs")
    dataset = write_beir(root / "tiny")
    built = subprocess.run([sys.executable, "-m", "cormorant.cli", "index", "build", "-d", dataset,
                            "-p", "bm25", "-o", root / "idx"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    port = free_port()
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cormorant.cli", "serve", "--index",
                             f"tiny={root / 'idx'}", "--open-reads", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (root / "serve.log").read_text()
        import time

        time.sleep(0.1)
    yield url, root
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_docs_pages_load_their_scripts_from_the_service(served):
    url, root = served
    for page in ("/docs", "/redoc"):
        html = httpx.get(url + page).text
        assert "cdn" not in html and "https://" not in html, html
    assert httpx.get(f"{url}/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert httpx.get(f"{url}/docs-assets/redoc.standalone.js").status_code == 200
    # --open-reads: a search with no key is answered.
    found = httpx.post(f"{url}/v1/indexes/tiny/search", json={"query": "cholesterol drugs", "k": 1})
    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["hits"][0]["doc_id"] == "d3"
    assert "no API keys are configured" not in (root / "serve.log").read_text()


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed")
@pytest.mark.parametrize("page, rendered", [("/docs", 'class="opblock-summary-path"'),
                                            ("/redoc", "/v1/indexes/{name}/search")])
def test_docs_render_in_headless_chromium_with_no_network(served, tmp_path, page, rendered):
    url, _ = served
    # Every host but the service's loopback address fails to resolve: a CDN would be a blank page.
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", url + page], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert rendered in result.stdout, result.stdout[-3000:]
    assert "Cormorant" in result.stdout


def test_a_service_nobody_can_read_warns_at_start(tmp_path, caplog):
    from cormorant.service import create_app, load_settings

    with caplog.at_level(logging.WARNING, logger="cormorant.service.app"):
        create_app(load_settings(None))
    assert "no API keys are configured and reads are closed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cormorant.service.app"):
        create_app(load_settings(None, open_reads=True))
    assert "no API keys" not in caplog.text
