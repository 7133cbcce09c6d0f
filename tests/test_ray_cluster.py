"""Two simulated Ray nodes (``ray.cluster_utils.Cluster`` on this machine): a sharded index
built with ``index build --ray ADDRESS`` and served with ``serve --ray ADDRESS`` answers
searches and writes over HTTP, with replicas on both nodes.

The cluster runs in a subprocess (tests/ray_cluster_run.py): this process's driver belongs to
the session's local cluster (``ray_local``), and a driver joins one cluster per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.service.conftest import key_config
from tests.test_ray_serve import free_port

pytest.importorskip("ray")
pytest.importorskip("fastapi")


@pytest.mark.slow
def test_two_nodes_build_and_serve_a_sharded_index(tmp_path: Path, beir_dir, tiny_encoder,
                                                   isolated_cache):
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump({"api_keys": key_config()}))
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "tests.ray_cluster_run", str(beir_dir), str(tiny_encoder),
         str(tmp_path / "idx"), str(config), str(free_port()), str(tmp_path / "report.json")],
        cwd=root, capture_output=True, text=True, timeout=540)
    assert (tmp_path / "report.json").is_file(), done.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["nodes"] == 2
    assert report["build"][0] == 0, report["build"]
    assert report["ready"], done.stderr[-4000:]
    assert report["replica_nodes"] == 2  # Serve spread the shard replicas over both nodes
    assert report["before"] and report["before"][0][0] in {"d1", "d2", "d3", "d4", "d5", "d6"}
    assert report["put"]["changed"] == ["n1"]
    assert report["after"][0][0] == "n1"
    assert report["unauthenticated"] == 401
