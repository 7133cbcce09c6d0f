"""Every command of docs/from-other-toolkits.md runs, in order, over a small BEIR dataset."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_beir

PAGE = Path(__file__).parents[1] / "docs" / "from-other-toolkits.md"


def blocks():
    return re.findall(r"```(bash|python)\n(.*?)```", PAGE.read_text(), re.S)


def test_every_block_of_the_toolkits_page_runs(tmp_path):
    dataset = write_beir(tmp_path / "scifact")
    shutil.copy(dataset / "qrels" / "test.tsv", dataset / "qrels" / "train.tsv")  # to tune on
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cormorant"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cormorant.cli "$@"\n')
    shim.chmod(0o755)
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "CORMORANT_CACHE": str(tmp_path / "cache")}
    found = blocks()
    assert len(found) >= 6
    for language, code in found:
        command = ["bash", "-e", "-o", "pipefail", "-c", code] if language == "bash" \
            else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert (tmp_path / "runs" / "tuned.trec").is_file() and (tmp_path / "report.html").is_file()
