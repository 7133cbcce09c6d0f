"""Reformulation stages with a deterministic fake model: the prompts they build, the queries
they produce, feedback, fusion, and their place in pipelines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from cormorant.errors import PipelineError
from cormorant.index.docstore import CorpusDocuments
from cormorant.llm import GenerationParams
from cormorant.llm.fake import EchoModel
from cormorant.pipeline import Flow, Stage
from cormorant.retrieval.assemble import build_pipeline, open_index, save_index, validate
from cormorant.retrieval.bm25 import BM25Retriever
from cormorant.retrieval.reformulate import (
    INSTRUCTIONS,
    GenQREnsemble,
    GenQRFusion,
    ReasonExpansion,
    ResetQueries,
    Rocchio,
)
from cormorant.types import Corpus, Document, Queries, Run
from tests.conftest import DOCS, write_beir

CORPUS = Corpus.from_documents([Document(i, x, title=t) for i, t, x in DOCS], name="tiny")
TEXTS = CorpusDocuments(CORPUS)


class Scripted:
    """Answers by the first rule whose key occurs in the prompt; records every prompt."""

    name = "scripted"
    identity = "scripted"

    def __init__(self, rules: dict[str, str], default: str = "") -> None:
        self.rules, self.default, self.prompts = rules, default, []

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        self.prompts.extend(prompts)
        return [next((v for k, v in self.rules.items() if k in p), self.default) for p in prompts]


class Recorder(Stage):
    """A retriever stand-in: records the queries it got; ranks by a fixed table per query text."""

    name = "recorder"

    def __init__(self, table: dict[str, dict[str, float]] | None = None) -> None:
        self.seen: list[Queries] = []
        self.original: list[Queries] = []
        self.table = table or {}

    def transform(self, flow: Flow) -> Flow:
        self.seen.append(dict(flow.queries))
        self.original.append(dict(flow.original))
        return flow.with_run(Run({q: dict(self.table.get(text, {"d1": 1.0}))
                                  for q, text in flow.queries.items()}))


def test_genqr_ensemble_builds_the_ten_paper_prompts_in_order() -> None:
    echo = EchoModel(reply="ignored")
    stage = GenQREnsemble(llm=echo)
    stage.expand({"q": "vitamin d depression"})
    assert echo.calls == [[f"{i}: vitamin d depression" for i in INSTRUCTIONS]]
    assert len(set(INSTRUCTIONS)) == 10  # every branch its own instruction (no late binding)


def test_genqr_ensemble_query_is_original_then_keywords_in_instruction_order() -> None:
    rules = {INSTRUCTIONS[0]: "sun-light, (tides)", INSTRUCTIONS[1]: "moon!", INSTRUCTIONS[2]: ""}
    stage = GenQREnsemble(llm=Scripted(rules), n=3)
    assert stage.expand({"q": "ocean"}) == {"q": "ocean sun light tides moon"}
    again = GenQREnsemble(llm=Scripted(rules), n=3, repeat=3)
    assert again.expand({"q": "ocean"}) == {"q": "ocean ocean ocean sun light tides moon"}


def test_genqr_ensemble_hands_the_expanded_query_to_the_next_stage() -> None:
    recorder = Recorder()
    pipe = GenQREnsemble(llm=EchoModel(reply="fish"), n=2) >> recorder
    pipe.search({"q": "birds"}, k=5)
    assert recorder.seen == [{"q": "birds fish fish"}]
    real = GenQREnsemble(llm=EchoModel(reply="cormorants underwater"), n=1) >> BM25Retriever.build(CORPUS)
    assert list(real.search({"q": "animals"}, k=1)["q"]) == ["d2"]


def test_few_shot_prompts_end_with_the_answer_prefix_and_stop_at_a_newline() -> None:
    model = Scripted({}, default="terms")
    stage = GenQREnsemble(llm=model, n=1, shots=2)
    stage.expand({"q": "ocean"})
    prompt = model.prompts[0]
    assert prompt.count("Expansion terms:") == 3
    assert prompt.endswith(f"{INSTRUCTIONS[0]}: ocean\nExpansion terms:")
    assert stage.decoding().stop == ("\n",)


def test_the_papers_beta_interpolation_is_a_weighted_sum_of_the_two_rankings() -> None:
    table = {"q0": {"a": 10.0, "b": 4.0}, "q0 k": {"b": 20.0, "c": 2.0}}
    searcher = Recorder(table)
    pipe = 0.75 * searcher + 0.25 * (GenQREnsemble(llm=EchoModel(reply="k"), n=1) >> searcher)
    run = pipe.search({"x": "q0"}, k=10)["x"]
    assert run == pytest.approx({"a": 7.5, "b": 0.75 * 4 + 0.25 * 20, "c": 0.5})
    assert searcher.seen == [{"x": "q0"}, {"x": "q0 k"}]  # the original query ranked once
    with pytest.raises(PipelineError, match="genqr_ensemble does not take beta"):
        validate("genqr_ensemble(beta=0.3) >> bm25")


def test_prf_puts_the_top_documents_before_the_instruction() -> None:
    model = Scripted({}, default="")
    bm25 = BM25Retriever.build(CORPUS)
    stage = GenQREnsemble(llm=model, n=2, feedback="prf", fb_docs=2)
    recorder = Recorder()
    (bm25 >> stage >> recorder).search({"q": "depression"}, k=3, documents=TEXTS)
    top = [d for d, _ in bm25.search({"q": "depression"}, k=2).ranked("q")]
    texts = {i: f"{t} {x}" for i, t, x in DOCS}
    context = " ".join(texts[d] for d in top)
    assert model.prompts == [f"Based on the given context information: {context}, {i}: depression"
                             for i in INSTRUCTIONS[:2]]
    # The first ranking was feedback: the stage after searches the collection again.
    flow = stage.transform(bm25.transform(Flow.start({"q": "depression"}, TEXTS)))
    assert flow.run is None and flow.queries == {"q": "depression"}
    with pytest.raises(PipelineError, match="needs a ranking before it"):
        (stage >> bm25).search({"q": "depression"}, k=3, documents=TEXTS)
    with pytest.raises(PipelineError, match="reads document text"):
        (bm25 >> stage >> bm25).search({"q": "depression"}, k=3)


def test_oracle_feeds_judged_documents_by_label(tmp_path: Path) -> None:
    qrels = write_beir(tmp_path / "b") / "qrels" / "test.tsv"
    model = Scripted({}, default="")
    stage = GenQREnsemble(llm=model, n=1, feedback="oracle", qrels=str(qrels))
    (stage >> BM25Retriever.build(CORPUS)).search({"q1": "vitamin d and depression"}, k=3,
                                                  documents=TEXTS)
    # q1 judges d1 (2) above d6 (1): the context lists them in that order.
    assert model.prompts[0].startswith("Based on the given context information: Vitamin D Vitamin D"
                                       " deficiency is associated with depression in adults."
                                       " Exercise Regular")
    with pytest.raises(PipelineError, match="feedback=oracle needs qrels"):
        GenQREnsemble(llm=model, feedback="oracle")


def test_critic_keeps_only_documents_the_model_calls_relevant() -> None:
    model = Scripted({"Document: Sleep": "yes", "Document: Exercise": "Yes.",
                      "Is the document relevant": "no"}, default="")
    stage = GenQREnsemble(llm=model, n=1, feedback="critic", fb_docs=5, fb_depth=6)
    bm25 = BM25Retriever.build(CORPUS)
    (bm25 >> stage >> bm25).search({"q": "depression"}, k=3, documents=TEXTS)
    judged = [p for p in model.prompts if "Is the document relevant" in p]
    assert len(judged) == 3  # bm25 finds three documents with "depression"
    final = [p for p in model.prompts if p.startswith("Based on")]
    assert len(final) == 1 and "Sleep Poor sleep" in final[0] and "Exercise Regular" in final[0]
    assert "Vitamin D" not in final[0]
    # Every judgement is kept for analysis, the "no" as well as the "yes".
    assert stage.verdicts == {"q": {"d1": False, "d4": True, "d6": True}}


def test_genqr_fusion_is_rrf_over_one_run_per_reformulation() -> None:
    rules = {INSTRUCTIONS[0]: "x", INSTRUCTIONS[1]: "y"}
    table = {"q x": {"a": 3.0, "b": 2.0}, "q y": {"b": 5.0, "c": 1.0}, "q": {"c": 9.0}}
    recorder = Recorder(table)
    run = GenQRFusion([recorder], llm=Scripted(rules), n=2).search({"1": "q"}, k=10)["1"]
    assert recorder.seen == [{"1": "q x"}, {"1": "q y"}]
    assert run == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})
    with_original = GenQRFusion([Recorder(table)], llm=Scripted(rules), n=2, include_original=True)
    assert with_original.search({"1": "q"}, k=10)["1"]["c"] == pytest.approx(1 / 62 + 1 / 61)
    assert str(with_original) == "genqr_fusion(recorder, llm=scripted, n=2, include_original=true)"


def test_reason_appends_or_replaces_and_keeps_the_query_when_generation_fails() -> None:
    assert ReasonExpansion(llm=EchoModel(reply="because\nof tides")).rewrite({"q": "moon"}) == \
        {"q": "moon because of tides"}
    assert ReasonExpansion(llm=EchoModel(reply="tides"), mode="replace").rewrite({"q": "moon"}) == \
        {"q": "tides"}
    assert ReasonExpansion(llm=EchoModel(reply="")).rewrite({"q": "moon"}) == {"q": "moon"}

    class Broken(EchoModel):
        def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
            raise RuntimeError("server down")
    assert ReasonExpansion(llm=Broken()).rewrite({"q": "moon"}) == {"q": "moon"}
    prompt = []
    model = Scripted({}, default="x")
    ReasonExpansion(llm=model).rewrite({"q": "why is\nthe sky blue"})
    prompt = model.prompts[0]
    assert prompt.startswith("why is the sky blue\n\nInstructions:\n1. Identify the essential problem")


def test_rocchio_moves_the_query_vector_towards_the_top_documents(tiny_encoder: Path) -> None:
    from cormorant.retrieval.dense import DenseRetriever

    dense = DenseRetriever.build(CORPUS, model=str(tiny_encoder), cache=False)
    queries = {"q": "depression"}
    plain = dense.search(queries, k=6)
    assert Rocchio([dense], beta=0.0).search(queries, k=6)["q"] == pytest.approx(plain["q"])
    moved = Rocchio([dense], alpha=1.0, beta=0.5, fb_docs=2).search(queries, k=6)["q"]
    q = dense.encode_queries(queries)[0]
    top = [d for d, _ in plain.ranked("q")[:2]]
    vector = q + 0.5 * dense.document_vectors(top).mean(axis=0)
    ids = list(dense.segments.ids())
    expected = dense.document_vectors(ids) @ vector
    assert moved == pytest.approx(dict(zip(ids, expected.tolist(), strict=True)), rel=1e-4)
    # After a first ranking it re-scores that ranking with the moved vector.
    both = (BM25Retriever.build(CORPUS) % 2 >> Rocchio([dense], beta=0.5, fb_docs=2)).search(
        queries, k=6)["q"]
    assert len(both) == 2 and all(both[d] == pytest.approx(moved[d], rel=1e-4) for d in both)
    with pytest.raises(PipelineError, match=r"takes a dense stage, rocchio\(dense\), not bm25"):
        Rocchio([BM25Retriever.build(CORPUS)])
    with pytest.raises(PipelineError, match=r"rocchio is written rocchio\(dense\)"):
        validate("rocchio >> dense")


def test_pipeline_strings_build_validate_and_round_trip(tmp_path: Path) -> None:
    text = "genqr_ensemble(llm=echo:fish, n=2) >> bm25"
    pipe = build_pipeline(text, CORPUS)
    assert str(pipe) == text
    assert list(pipe.search({"q": "birds"}, k=1)["q"]) == ["d2"]
    fusion = "genqr_fusion(bm25, llm=echo, fusion=combsum, llm_reply=fish)"
    validate(fusion)
    assert str(build_pipeline(fusion, CORPUS)) == fusion
    with pytest.raises(PipelineError, match=r"genqr_ensemble does not take colour \(it takes: llm,"):
        validate("genqr_ensemble(colour=red) >> bm25")
    with pytest.raises(PipelineError, match="n must be at most 10, got 11"):
        validate("genqr_ensemble(n=11) >> bm25")
    with pytest.raises(PipelineError, match="ranks nothing: end it with a stage that ranks"):
        build_pipeline("genqr_ensemble(llm=echo)", CORPUS).search("x")
    # An index stores only bm25; the reformulator comes back from the pipeline string.
    save_index(text, CORPUS, tmp_path / "idx")
    handle = open_index(tmp_path / "idx")
    assert str(handle.pipeline) == text
    assert list(handle.pipeline.search({"q": "birds"}, k=1)["q"]) == ["d2"]
    # Feedback text comes from the index's document store.
    prf = open_index(tmp_path / "idx", "bm25 >> genqr_ensemble(llm=echo, n=1, feedback=prf) >> bm25")
    assert set(prf.pipeline.search({"q": "cormorants fish"}, k=2)["q"]) == {"d2", "d5"}


def test_stages_after_a_reformulator_see_the_rewritten_and_the_original_query() -> None:
    inner, after, reset = Recorder(), Recorder(), Recorder()
    pipe = GenQREnsemble(llm=EchoModel(reply="k"), n=1) >> inner >> after >> ResetQueries() >> reset
    pipe.search({"q": "z"}, k=1)
    assert inner.seen == after.seen == [{"q": "z k"}]
    assert after.original == [{"q": "z"}]
    assert reset.seen == [{"q": "z"}]
    assert str(pipe) == "genqr_ensemble(llm=echo, n=1) >> recorder >> recorder >> reset >> recorder"


def test_reasoning_expansion_on_bright_format_data(tmp_path: Path) -> None:
    """BRIGHT's setting: the model reasons about the post; the gold ``reasoning`` field is never
    shown to it; excluded documents are dropped before scoring."""
    from cormorant.data import DatasetSpec
    from cormorant.eval.harness import run_split
    from tests.test_data import bright_fixture

    ds = DatasetSpec(bright_fixture(tmp_path / "biology")).load()
    model = Scripted({"smell primaries": "the olfactory answer is b_0"}, default="")
    stage = build_pipeline("bm25", ds.corpus)
    pipe = ReasonExpansion(llm=model) >> stage
    plain = run_split(stage, ds, "test", measures=["nDCG@10"])
    result = run_split(pipe, ds, "test", measures=["nDCG@10"])
    assert not any("GOLD NOTES" in p for p in model.prompts)
    assert len(model.prompts) == 2
    assert "x_0" not in result.run["0"]
    # Query "smell primaries" shares no word with the corpus; its reasoning finds b_0.
    assert plain.per_query["1"]["nDCG@10"] == 0.0 and result.per_query["1"]["nDCG@10"] == 1.0


def test_cached_runs_key_on_the_language_models_weights(tmp_path) -> None:
    """A model replaced at the same path must not reuse the old model's evaluation runs."""
    from cormorant.retrieval.assemble import identity

    model = tmp_path / "lm"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 4096)
    pipeline = f"genqr_ensemble(llm=transformers:{model}) >> bm25"
    before = identity(pipeline)
    (model / "model.safetensors").write_bytes(b"\1" * 4096)
    assert identity(pipeline) != before
    served = identity("genqr_ensemble(llm=openai:gpt-x) >> bm25")[0]
    assert served["llm"] == "openai:gpt-x" and "llm_weights" not in served  # a server: its name
