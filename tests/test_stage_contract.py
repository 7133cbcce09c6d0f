"""The stage contract over every registered stage: declared parameters give one string form that
survives building, saving and reopening; ``% k`` reaches the retrievers; a stage from another
package plugs in with no edit to Cormorant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cormorant import registry
from cormorant.errors import PipelineError
from cormorant.pipeline import Flow
from cormorant.retrieval.assemble import build_pipeline, identity, open_index, save_index, validate
from cormorant.retrieval.bm25 import BM25Retriever
from cormorant.types import Corpus, Document
from tests.conftest import DOCS

CORPUS = Corpus.from_documents([Document(i, x, title=t) for i, t, x in DOCS], name="tiny")
QUERIES = {"q1": "vitamin d depression", "q2": "cormorants fish"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path,
           tiny_tilde: Path) -> dict[str, Path]:
    """A tiny encoder, a cross-encoder made from it, a tiny generator and a tildev2 model."""
    from sentence_transformers import CrossEncoder

    from tests.seal_helpers import make_tiny_generator

    root = tmp_path_factory.mktemp("contract")
    ce = root / "ce"
    CrossEncoder(str(tiny_encoder), num_labels=1).save_pretrained(str(ce))
    return {"encoder": tiny_encoder, "ce": ce, "generator": make_tiny_generator(root / "gen"),
            "tilde": tiny_tilde}


def examples(m: dict[str, Path]) -> dict[str, str]:
    """One pipeline per registered stage, each with non-default values of its parameters."""
    enc = m["encoder"]
    return {
        "bm25": "bm25(depth=50, k1=1.2, b=0.75, stemmer=none)",
        "dense": f"dense(depth=20, model={enc}, query_model={enc}, batch_size=8, cache=false,"
                 " nprobe=4)",
        "chamfer": f"chamfer(model={enc}, max_length=64)",
        "muvera": f"muvera(model={enc}, repetitions=2, k_sim=2, d_proj=8, seed=3, index=flat,"
                  " candidates=5, carve=0.5)",
        "seal": f"seal(model={m['generator']}, beams=3, max_length=4, titles=true)",
        "rerank": f"bm25 % 5 >> rerank(model={m['ce']}, batch_size=4, max_length=64)",
        "tildev2": f"bm25 % 5 >> tildev2(depth=20, model={m['tilde']}, batch_size=4)",
        "rrf": "rrf(bm25, bm25(k1=1.2), k=10)",
        "combsum": "combsum(bm25, bm25(k1=1.2), normalize=minmax)",
        "genqr_ensemble": "genqr_ensemble(llm=echo:fish, n=2, repeat=2, shots=1) >> bm25",
        "genqr_fusion": "genqr_fusion(bm25, llm=echo, n=2, fusion=combsum, llm_reply=fish)",
        "reason": "reason(llm=echo:tides, max_new_tokens=16, mode=replace) >> bm25",
        "reset": "genqr_ensemble(llm=echo:fish, n=1) >> bm25 >> reset >> bm25",
        "rocchio": f"rocchio(dense(model={enc}, cache=false), beta=0.5, fb_docs=2)",
        "bm25.lucene": "bm25.lucene(k1=1.2, rm3=true, fb_terms=5)",
        "rm3": "rm3(fb_docs=3)",
    }


JAVA = {"bm25.lucene", "rm3"}


def test_every_registered_stage_has_a_round_trip_example(models) -> None:
    # A new stage must add its example here, so the round trip below covers it.
    assert set(registry.stage_names()) == set(examples(models))


@pytest.mark.parametrize("name", sorted(set(examples({"encoder": Path("e"), "ce": Path("c"),
                                                        "generator": Path("g"),
                                                        "tilde": Path("t")})) - JAVA))
def test_build_save_reopen_print_gives_the_same_string_and_identity(name, models, tmp_path,
                                                                    isolated_cache) -> None:
    round_trip(examples(models)[name], tmp_path)


@pytest.mark.java
@pytest.mark.parametrize("name", sorted(JAVA))
def test_lucene_stages_round_trip(name, models, tmp_path, isolated_cache) -> None:
    pytest.importorskip("pyserini")
    round_trip(examples(models)[name], tmp_path)


def round_trip(text: str, tmp_path: Path) -> None:
    built = build_pipeline(text, CORPUS)
    assert str(built) == text
    ranked = built.search(QUERIES, k=3)
    assert set(ranked) == set(QUERIES)
    save_index(text, CORPUS, tmp_path / "idx")
    handle = open_index(tmp_path / "idx")
    assert handle.meta["pipeline"] == text
    assert str(handle.pipeline) == text
    assert identity(str(handle.pipeline)) == identity(text)
    assert handle.pipeline.search(QUERIES, k=3).keys() == ranked.keys()


def test_defaults_are_not_printed_and_do_not_change_the_identity() -> None:
    assert str(build_pipeline("bm25(k1=0.9, b=0.4, depth=1000)", CORPUS)) == "bm25"
    assert identity("bm25(k1=0.9)") == identity("bm25")
    assert identity("bm25(k1=1.2)") != identity("bm25")
    assert identity("rrf(bm25, bm25, k=60)") == identity("rrf(bm25, bm25)")


def test_build_time_settings_cannot_change_on_reopen_but_query_time_ones_can(tmp_path,
                                                                            tiny_encoder) -> None:
    text = f"dense(model={tiny_encoder}, cache=false)"
    save_index(text, CORPUS, tmp_path / "idx")
    with pytest.raises(PipelineError, match=r"built with dense\(index='flat'\); index='hnsw'"
                                            r" would need a rebuild"):
        open_index(tmp_path / "idx", "dense(index=hnsw)")
    reopened = open_index(tmp_path / "idx", "dense(batch_size=3, depth=4)")
    assert str(reopened.pipeline) == f"dense(depth=4, model={tiny_encoder}, batch_size=3," \
                                     " cache=false)"
    assert all(len(docs) == 4 for docs in reopened.pipeline.rank(QUERIES).values())
    with pytest.raises(PipelineError, match="dense: batch_size must be at least 1, got -3"):
        open_index(tmp_path / "idx", "dense(batch_size=-3)")


@pytest.mark.parametrize("bad, message", [
    ("bm25(k1=abc)", "bm25: k1 must be a number, got 'abc'"),
    ("bm25(k1=" + "9" * 5000 + ")", "bm25: k1 must be a number"),
    ("dense(max_length=-1)", "dense: max_length must be at least 1, got -1"),
    ("bm25(method=okapi)", "bm25: method must be one of lucene, robertson"),
    ("bm25(depth=2.5)", "bm25: depth must be an integer, got 2.5"),
    ("muvera(carve=2)", "muvera: carve must be at most 1, got 2.0"),
    ("rerank", r"rerank needs model=\.\.\."),
    ("1e999 * bm25", "the weight 1e999 is not a finite number"),
    ("(" * 100 + "bm25" + ")" * 100, "nested deeper than 64 levels"),
    ("rrf(" * 3000 + "bm25", "nested deeper than 64 levels"),
])
def test_bad_parameters_get_one_clear_line(bad, message) -> None:
    with pytest.raises(PipelineError, match=message):
        validate(bad)


class CountingBM25(BM25Retriever):
    """BM25 that records how many documents each first-stage call asked for."""

    asked: list[int] = []

    def retrieve(self, queries, k):
        self.asked.append(k)
        return super().retrieve(queries, k)


def test_a_cut_off_reaches_the_retriever_and_the_result_is_the_same() -> None:
    bm25 = CountingBM25.build(CORPUS)
    full = bm25.rank(QUERIES)
    assert bm25.asked == [1000]
    assert (bm25 % 2).rank(QUERIES) == full.topk(2) and bm25.asked[-1] == 2
    assert bm25.search(QUERIES, k=3) == full.topk(3) and bm25.asked[-1] == 3
    # The cut-off after '>>' limits the second stage, not the candidates of the first.
    (bm25 >> bm25 % 1).rank(QUERIES)
    assert bm25.asked[-1] == 1000
    # Fusion needs each input at its own depth, whatever is kept of the fused ranking.
    from cormorant.pipeline import rrf

    (rrf(bm25, bm25) % 1).rank(QUERIES)
    assert bm25.asked[-2:] == [1000, 1000]
    # A weight keeps the order, so the cut-off still reaches through it; a negative one not.
    (0.5 * bm25 % 2).rank(QUERIES)
    assert bm25.asked[-1] == 2
    (-1 * bm25 % 2).rank(QUERIES)
    assert bm25.asked[-1] == 1000


def test_the_flow_carries_queries_ranking_and_documents() -> None:
    from cormorant.index.docstore import CorpusDocuments

    flow = Flow.start({"q": "moon"}, CorpusDocuments(CORPUS))
    assert flow.run is None and flow.original == flow.queries == {"q": "moon"}
    assert flow.texts(["d2", "nope"], "test") == {"d2": dict((i, f"{t} {x}")
                                                             for i, t, x in DOCS)["d2"]}
    with pytest.raises(PipelineError, match="'rerank' needs a ranking before it"):
        flow.ranking("rerank")


PLUGIN = '''
from typing import ClassVar

from cormorant.params import Param, Params
from cormorant.pipeline import Flow
from cormorant.retrieval.base import QueryStage
from cormorant.types import Run


class Shout(QueryStage):
    """Scores every candidate by how often the query's first word occurs in it."""

    name: ClassVar[str] = "shout"
    PARAMS: ClassVar[Params] = Params(Param("bonus", float, 0.0, "added to every score"))

    def transform(self, flow: Flow) -> Flow:
        run = flow.ranking(self)
        texts = flow.texts([d for docs in run.values() for d in docs], self)
        return flow.with_run(Run({q: {d: texts[d].lower().count(flow.queries[q].split()[0])
                                      + self.settings["bonus"] for d in docs}
                                  for q, docs in run.items()}))
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package outside Cormorant that registers a stage through an entry point."""
    site = tmp_path / "site"
    (site / "shout_stage-1.0.dist-info").mkdir(parents=True)
    (site / "shout_stage.py").write_text(PLUGIN)
    (site / "shout_stage-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: shout-stage\nVersion: 1.0\n")
    (site / "shout_stage-1.0.dist-info" / "entry_points.txt").write_text(
        "[cormorant.retrievers]\nshout = shout_stage:Shout\n")
    monkeypatch.syspath_prepend(str(site))
    registry._entry_points.cache_clear()
    yield "shout"
    registry._entry_points.cache_clear()
    sys.modules.pop("shout_stage", None)


def test_a_stage_from_another_package_works_in_strings_eval_and_the_service(
        plugin, beir_dir, tmp_path, isolated_cache) -> None:
    from typer.testing import CliRunner

    from cormorant.cli import app
    from cormorant.data import load_dataset
    from cormorant.service.settings import ServiceSettings
    from tests.service.conftest import client_for

    text = "bm25 % 3 >> shout(bonus=0.5)"
    corpus = load_dataset(beir_dir).corpus
    pipe = build_pipeline(text, corpus)
    assert str(pipe) == text
    ranked = pipe.search({"q": "vitamin d"}, k=3)["q"]
    assert max(ranked.values()) >= 1.5  # a document that says "vitamin" scored by the plugin

    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "-d", str(beir_dir), "-p", text, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["pipeline"] == text

    index = save_index("bm25", corpus, tmp_path / "idx")
    settings = ServiceSettings(indexes={"tiny": {"path": str(index), "pipelines": [text]}},
                               api_keys=[], open_reads=True)
    with client_for(settings) as client:
        answer = client.post("/v1/indexes/tiny/search",
                             json={"query": "vitamin d", "k": 3, "pipeline": text})
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["hits"][0]["score"] >= 1.5


def test_the_readmes_stage_table_is_generated_from_the_declarations() -> None:
    from cormorant.stage_help import END, START, markdown_table

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split(START, 1)[1].split(END, 1)[0]
    assert block.strip() == markdown_table(), "run: python -m cormorant.stage_help README.md"
