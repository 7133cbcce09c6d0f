"""A fuzz test of the command line: generated broken datasets, index directories, pipeline
strings and option values. For each: a non-zero exit, one ``error:`` line (a ``^`` may follow),
no traceback, and no output file (issue 31). The cases an outside test found are kept as
fixed inputs in tests/test_bad_input.py; this test looks for new ones.

Examples are bounded (``FUZZ_EXAMPLES`` per test, default 25) so the default run takes
seconds; ``CORMORANT_FUZZ_EXAMPLES=2000`` runs the long search that docs/reliability.md reports.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli_support import CliResult, run_cli
from tests.conftest import write_beir

FUZZ_EXAMPLES = int(os.environ.get("CORMORANT_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SEEN: dict[str, int] = {}  # cases run per test, for the report in docs/reliability.md


def check_refused(result: CliResult, outputs: list[Path]) -> None:
    """The contract for bad input (a ``^`` line may follow the one ``error:`` line)."""
    assert result.traceback is None, result.traceback
    assert result.code not in (0, None), (result.code, result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) in (1, 2) and lines[0].startswith("error: "), result.err
    assert len(lines) == 1 or lines[1].strip() == "^", result.err
    assert "Traceback" not in result.err
    for out in outputs:
        assert not out.exists(), out


def check_clean(result: CliResult) -> None:
    """Accepted or refused, but never a traceback and never more than one error line."""
    assert result.traceback is None, result.traceback
    if result.code != 0:
        check_refused(result, [])


FILES = ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"]
damage = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-16")),
    st.text(max_size=200).map(lambda t: t.encode("latin-1", errors="replace")),
    st.lists(st.one_of(st.dictionaries(st.sampled_from(["_id", "text", "title", "x"]),
                                       st.one_of(st.none(), st.integers(), st.text(max_size=8),
                                                 st.floats(), st.lists(st.integers()))),
                       st.integers(), st.text(max_size=10)), max_size=5)
    .map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
    st.lists(st.tuples(st.text("qd1 ", max_size=3), st.text("dq2x", max_size=3),
                       st.sampled_from(["1", "inf", "nan", "-1", "1e400", "x", "", "2.5"])),
             max_size=4).map(lambda rows: "\n".join("\t".join(r) for r in rows).encode()),
)


@FUZZ
@given(target=st.sampled_from(FILES + ["corpus.jsonl.gz"]), data=damage,
       command=st.sampled_from(["eval", "index", "info"]))
def test_fuzz_broken_datasets(target, data, command) -> None:
    SEEN["datasets"] = SEEN.get("datasets", 0) + 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = write_beir(root / "ds")
        if target.endswith(".gz"):
            (folder / "corpus.jsonl").unlink()
        (folder / target).write_bytes(data)
        out = root / "out"
        args = {"eval": ["eval", "-d", folder, "--no-cache", "--json", out],
                "index": ["index", "build", "-d", folder, "-o", out],
                "info": ["data", "info", folder]}[command]
        result = run_cli(*args)
        if command == "info" and result.code == 1 and result.traceback is None:
            return  # data info reports problems (exit 1) as findings, not errors
        check_clean(result)
        if result.code != 0:
            assert not out.exists()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-index")
    write_beir(root / "ds")
    assert run_cli("index", "build", "-d", root / "ds", "-o", root / "idx").code == 0
    return root / "idx"


meta_values = st.one_of(st.none(), st.integers(), st.text(max_size=10), st.booleans(),
                        st.lists(st.integers(), max_size=2), st.builds(dict),
                        st.builds(lambda: [{"name": "bm25"}]), st.just("../.."))


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(["pipeline", "leaves", "count", "kind",
                                                  "leaves.0.dir", "leaves.0.kind",
                                                  "leaves.0.name", "leaves.0.params", "docs",
                                                  "leaf.params", "leaf.settings"]),
                                meta_values), min_size=1, max_size=3))
def test_fuzz_hand_edited_indexes(index, edits) -> None:
    SEEN["indexes"] = SEEN.get("indexes", 0) + 1
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(index, Path(tmp) / "idx"))
        meta = json.loads((copy / "meta.json").read_text())
        leaf = json.loads((copy / "0-bm25" / "meta.json").read_text())
        for field, value in edits:
            value = json.loads(json.dumps(value))  # a fresh copy: no value holds another
            if field == "docs":
                (copy / "docs.sqlite").write_bytes(json.dumps(value).encode() * 50)
            elif field.startswith("leaf."):
                leaf[field[5:]] = value
            elif field.startswith("leaves.0."):
                if isinstance(meta.get("leaves"), list) and meta["leaves"] \
                        and isinstance(meta["leaves"][0], dict):
                    meta["leaves"][0][field[9:]] = value
            else:
                meta[field] = value
        (copy / "meta.json").write_text(json.dumps(meta))
        (copy / "0-bm25" / "meta.json").write_text(json.dumps(leaf))
        check_clean(run_cli("search", "--index", copy, "vitamin", "--json"))
        check_clean(run_cli("search", "--index", copy, "fish", "--pipeline", "bm25 % 2"))


atoms = st.sampled_from(["bm25", "dense", "rrf", "combsum", "rerank", "seal", "muvera", "x",
                         "(", ")", ",", "=", "%", ">>", "*", "+", "1e999", "inf", "nan", "-1",
                         "k1", "depth", "9" * 400, "'", '"', "\x00", "é", " ", "\n", "bm25(",
                         "(k1=abc)", "(max_length=-1)", "(batch_size=-3)", "0.5", "1e-400"])
pipelines = st.one_of(st.lists(atoms, min_size=1, max_size=12).map("".join),
                      st.text(max_size=60),
                      st.integers(1, 5000).map(lambda n: "(" * n + "bm25" + ")" * n),
                      st.integers(65, 3000).map(lambda n: "rrf(" * n + "bm25"))


@FUZZ
@given(pipeline=pipelines)
def test_fuzz_pipeline_strings(index, tmp_path, pipeline) -> None:
    SEEN["pipelines"] = SEEN.get("pipelines", 0) + 1
    out = tmp_path / "built"
    shutil.rmtree(out, ignore_errors=True)
    dataset = index.parent / "ds"
    for args in (["search", "--index", index, "-p", pipeline, "fish"],
                 ["index", "build", "-d", dataset, "-p", pipeline, "-o", out]):
        result = run_cli(*args)
        check_clean(result)
        if result.code != 0:
            assert not out.exists()
        shutil.rmtree(out, ignore_errors=True)


paths = st.sampled_from(["DIR", "FILE/x.json", "/dev/full", "MISSING/deep/x.json", "-",
                         "/proc/version", "LINK_TO_DIR"])


@FUZZ
@given(option=st.sampled_from(["--json", "--markdown", "--run-file", "--report"]),
       path=paths, depth=st.integers(-5, 3), k=st.integers(-3, 3))
def test_fuzz_option_values(index, option, path, depth, k) -> None:
    SEEN["options"] = SEEN.get("options", 0) + 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "DIR").mkdir()
        (root / "FILE").write_text("keep")
        (root / "LINK_TO_DIR").symlink_to(root / "DIR")
        target = path if path.startswith("/") or path == "-" else str(root / path)
        result = run_cli("eval", "-d", index.parent / "ds", "--no-cache", "--depth", depth,
                         option, target)
        check_clean(result)
        assert (root / "FILE").read_text() == "keep" and (root / "DIR").is_dir()
        assert (root / "LINK_TO_DIR").is_symlink()
        check_clean(run_cli("search", "--index", index, "-k", k, "fish"))
