import pytest

from cormorant.errors import CormorantError, PipelineError
from cormorant.pipeline import RRF, CombSUM, StaticStage, rrf
from cormorant.pipeline_syntax import materialize, parse
from cormorant.retrieval.assemble import build_pipeline
from cormorant.types import Corpus, Document, Run

A = StaticStage(Run({"q": {"x": 3.0, "y": 2.0, "z": 1.0}}), "a")
B = StaticStage(Run({"q": {"z": 9.0, "y": 1.0}}), "b")


class Doubler(StaticStage):
    """Re-scores candidates: twice their incoming score."""

    def transform(self, flow):
        run = flow.ranking(self)
        return flow.with_run(Run({q: {d: 2 * s for d, s in run[q].items()} for q in flow.queries}))


def test_rrf_hand_computed():
    fused = rrf(A, B, k=60).rank({"q": "t"})["q"]
    assert fused["x"] == pytest.approx(1 / 61)
    assert fused["y"] == pytest.approx(1 / 62 + 1 / 62)
    assert fused["z"] == pytest.approx(1 / 63 + 1 / 61)
    assert max(fused, key=fused.get) == "z"


def test_weighted_rrf_weighs_each_stage_reciprocal_ranks_by_its_factor():
    fused = rrf(A, 0.5 * B, k=60).rank({"q": "t"})["q"]
    assert fused["x"] == pytest.approx(1 / 61)
    assert fused["y"] == pytest.approx(1 / 62 + 0.5 / 62)
    assert fused["z"] == pytest.approx(1 / 63 + 0.5 / 61)
    assert max(fused, key=fused.get) == "y"  # not z, B's top document, as unweighted
    # the weight is on the reciprocal rank: scaling B's scores alone would change nothing
    assert rrf(A, 1.0 * B).rank({"q": "t"}) == rrf(A, B).rank({"q": "t"})


def test_weighted_rrf_parses_round_trips_and_refuses_non_positive_weights():
    corpus = Corpus.from_documents([Document("d1", "heart attack risk"),
                                    Document("d2", "sleep and bone")])
    pipe = build_pipeline("rrf(bm25, 0.1 * bm25(k1=1.2))", corpus)
    assert str(pipe) == "rrf(bm25, 0.1 * bm25(k1=1.2))" and pipe.stage.weights == [1.0, 0.1]
    with pytest.raises(PipelineError, match="rrf weights"):
        rrf(A, -1 * B)
    with pytest.raises(PipelineError, match="rrf weights"):
        rrf(A, 0.5 * (-1 * B))  # no order reversed behind a positive outer factor
    assert rrf(A, 2 * (0.25 * B)).weights == [1.0, 0.5]  # nested factors multiply
    with pytest.raises(PipelineError, match="outside the cut-off"):
        build_pipeline("rrf(bm25, bm25 * 0.1 % 100)", corpus)
    assert build_pipeline("rrf(bm25, 0.1 * bm25 % 100)", corpus).stage.weights == [1.0, 0.1]


def test_operators_compose():
    queries = {"q": "t"}
    assert (A + B).rank(queries)["q"] == {"x": 3.0, "y": 3.0, "z": 10.0}
    assert (0.5 * A).rank(queries)["q"]["x"] == 1.5
    assert list((A % 2).rank(queries)["q"]) == ["x", "y"]
    assert (A % 1 >> Doubler(Run())).rank(queries)["q"] == {"x": 6.0}


def test_combsum_minmax():
    fused = CombSUM([A, B], normalize="minmax").rank({"q": "t"})["q"]
    assert fused == {"x": 1.0, "y": pytest.approx(0.5), "z": pytest.approx(1.0)}


def test_search_validates_input():
    with pytest.raises(PipelineError, match="positive integer"):
        A.search({"q": "text"}, k=0)
    with pytest.raises(PipelineError, match="empty"):
        A.search({"q": "   "})
    with pytest.raises(PipelineError, match="no queries"):
        A.search([])
    with pytest.raises(PipelineError, match="at least two"):
        RRF([A])
    with pytest.raises(PipelineError, match="needs a stage"):
        A + 3  # noqa: B018


def test_string_pipelines_build_over_a_corpus():
    corpus = Corpus.from_documents([Document("a", "cats purr softly"),
                                    Document("b", "dogs bark loudly"),
                                    Document("c", "cats and dogs")])
    pipe = build_pipeline("rrf(bm25, bm25(k1=1.2, b=0.75)) % 2", corpus)
    assert str(pipe) == "rrf(bm25, bm25(k1=1.2, b=0.75)) % 2"
    run = pipe.search({"q": "dogs"}, k=5)
    assert set(run["q"]) == {"b", "c"}


def test_unknown_names_list_what_exists():
    corpus = Corpus.from_documents([Document("a", "x")])
    with pytest.raises(CormorantError, match=r"unknown stage 'bm26'.*bm25.*dense.*rrf"):
        build_pipeline("rrf(bm26, dense)", corpus)
    with pytest.raises(PipelineError, match=r"bm25 does not take colour \(it takes: depth, k1, b"):
        build_pipeline("bm25(colour=red)", corpus)
    with pytest.raises(PipelineError, match=r"rrf works on other stages: rrf\(bm25, dense\)"):
        materialize(parse("rrf"), lambda leaf, cls: A)
