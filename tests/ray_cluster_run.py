"""A two-node Ray cluster (``ray.cluster_utils.Cluster``, simulated on this machine) that builds
a sharded index on Ray (``index build --shards 2 --ray ADDRESS``) and serves it with
``cormorant serve --ray ADDRESS``, then searches and writes over HTTP; prints a JSON report.

Run by tests/test_ray_cluster.py in a process of its own: the rest of the suite shares one
``ray.init`` (the ``ray_local`` fixture), and a driver connects to one cluster per process.

    python -m tests.ray_cluster_run BEIR_DIR MODEL OUT CONFIG PORT REPORT
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from typing import Any

# Before Ray is imported (it reads these once): token authentication on, explicitly.
os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                   "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"})

import httpx  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from tests.cli_support import run_cli  # noqa: E402
from tests.service.conftest import READ_KEY, WRITE_KEY, auth  # noqa: E402


def replica_nodes() -> set[str]:
    """The nodes Serve placed the shard replicas on."""
    nodes = set()
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith("SERVE_REPLICA::") and "#tiny-" in entry["name"]:
            actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
            nodes.add(ray.get(actor.__ray_call__.remote(
                lambda self: ray.get_runtime_context().get_node_id())))
    return nodes


def main(beir: str, model: str, out: str, config: str, port: str) -> dict[str, Any]:
    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        return build_and_serve(cluster, beir, model, out, config, port)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def build_and_serve(cluster: Cluster, beir: str, model: str, out: str, config: str,
                    port: str) -> dict[str, Any]:
    report: dict[str, Any] = {"nodes": sum(n["Alive"] for n in ray.nodes())}
    built = run_cli("index", "build", "-d", beir, "-o", out, "--shards", "2",
                    "-p", f"rrf(bm25, dense(model={model}))", "--ray", cluster.address,
                    "--actors", "2")
    report["build"] = [built.code, built.err[-2000:], built.traceback]
    serving = threading.Thread(target=run_cli, daemon=True, args=(
        "serve", "--ray", cluster.address, "--index", f"tiny={out}", "--config", config,
        "--replicas", "2", "--replica-cpus", "0.25", "--port", port))
    serving.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 240
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not serving.is_alive():
            report["ready"] = False
            return report
        time.sleep(0.5)
    report["ready"] = True
    report["replica_nodes"] = len(replica_nodes())

    def search(query: str) -> list[list[Any]]:
        body = client.post("/v1/indexes/tiny/search", headers=auth(READ_KEY),
                           json={"query": query, "k": 6}).json()
        return [[h["doc_id"], h["score"]] for h in body["results"][0]["hits"]]

    report["before"] = search("cormorants fishing")
    doc = {"doc_id": "n1", "text": "Pelicans scoop fish with a pouch."}
    report["put"] = client.put("/v1/indexes/tiny/documents", headers=auth(WRITE_KEY),
                               json={"documents": [doc]}).json()
    report["after"] = search("pelicans pouch")
    report["unauthenticated"] = client.post("/v1/indexes/tiny/search",
                                            json={"query": "x"}).status_code
    return report


if __name__ == "__main__":
    # To a file: the serving thread's run_cli holds sys.stdout redirected.
    with open(sys.argv[6], "w") as handle:
        json.dump(main(*sys.argv[1:6]), handle)
    os._exit(0)  # the cluster is shut down; the serving thread waits on it forever
