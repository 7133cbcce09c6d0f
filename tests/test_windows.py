"""Long documents split into windows (``passages=LENGTH/STRIDE``) with window scores
aggregated per document (``aggregate=max|first|sum``), and long queries split too: the
splitting, each aggregate against scores computed by hand, the index identity, writes and
bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from cormorant.errors import PipelineError
from cormorant.retrieval.assemble import build_pipeline, open_index, save_index
from cormorant.retrieval.windows import (
    Splitter,
    WindowSpec,
    aggregate_scores,
    combine_query_windows,
    reduce_groups,
    spans,
)
from cormorant.types import Corpus, Document, Run

WORDS = ("heron pelican cormorant fish river statin vitamin sleep depression heart storm"
         " salmon coral reef lake winter summer gene protein cell virus").split()
QUERIES = {"a": "heron fish river", "b": "vitamin depression sleep", "c": "coral reef salmon"}


def long_text(seed: int, words: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=words).tolist())


DOCS = [Document(f"d{i}", long_text(i, 6 + 9 * i), title=f"title {WORDS[i]}")
        for i in range(6)]


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_encoder))


def corpus() -> Corpus:
    return Corpus.from_documents(DOCS, name="long")


# -- splitting -------------------------------------------------------------------------------

def test_spans_step_by_stride_until_a_window_reaches_the_end():
    assert spans(10, budget=4, stride=3) == [(0, 4), (3, 7), (6, 10)]  # 6 + 4 reaches 10
    assert spans(11, budget=4, stride=3) == [(0, 4), (3, 7), (6, 10), (9, 11)]  # a short last
    assert spans(4, budget=4, stride=2) == [(0, 4)]
    assert spans(0, budget=4, stride=2) == [(0, 0)]  # an empty text is one (empty) window


def test_spans_keep_words_whole():
    begins = [True, False, True, True, False, False, True, True]  # words: 0-1, 2, 3-5, 6, 7
    assert spans(8, budget=4, stride=2, begins=begins) == [(0, 3), (2, 6), (3, 7), (6, 8)]
    # a word longer than the window is cut: nothing else fits
    assert spans(6, budget=2, stride=2, begins=[True] + [False] * 5) == [
        (0, 2), (2, 4), (4, 6)]


NUMBERS = " ".join(str(i) for i in range(40))  # one token per word


def test_windows_fit_the_length_overlap_by_the_stride_and_cover_the_text(tokenizer):
    all_tokens = tokenizer.tokenize(NUMBERS)
    assert len(all_tokens) == 40
    windows = Splitter(tokenizer, WindowSpec(16, 8), special=2).split(NUMBERS)
    tokens = [tokenizer.tokenize(w) for w in windows]
    assert tokens == [all_tokens[i:i + 14] for i in (0, 8, 16, 24, 32)]  # 16 - [CLS], [SEP]
    assert len(tokens[-1]) == 8  # the last window is shorter: 24 + 14 < 40 <= 32 + 14
    encoded = tokenizer(windows, truncation=False)["input_ids"]
    assert max(len(ids) for ids in encoded) == 16  # each fits the model in LENGTH tokens


def test_windows_never_cut_a_word(tokenizer):
    text = " ".join(WORDS * 3)  # 'cormorant' is cor ##mora ##nt
    windows = Splitter(tokenizer, WindowSpec(12, 6), special=2).split(text)
    assert all(set(w.split()) <= set(WORDS) for w in windows)
    assert all(len(tokenizer.tokenize(w)) <= 10 for w in windows)
    assert windows[0].split()[0] == WORDS[0] and windows[-1].split()[-1] == WORDS[-1]
    words = text.split()  # consecutive windows overlap or touch: no word is skipped
    covered = set()
    position = 0
    for window in windows:
        found = window.split()
        position = next(i for i in range(position, len(words))
                        if words[i:i + len(found)] == found)
        covered.update(range(position, position + len(found)))
    assert covered == set(range(len(words)))


def test_the_title_goes_before_every_window_and_counts_in_its_length(tokenizer):
    windows = Splitter(tokenizer, WindowSpec(16, 8), special=2).split(NUMBERS,
                                                                       title="heron fish")
    assert all(w.startswith("heron fish ") for w in windows)
    # each window holds 12 text tokens now, still 8 apart
    assert [w.split()[2:] for w in windows] == [NUMBERS.split()[i:i + 12]
                                                for i in (0, 8, 16, 24, 32)]


def test_a_long_title_is_cut_to_half_the_window(tokenizer):
    title = " ".join(WORDS)
    assert len(tokenizer.tokenize(title)) > 14
    windows = Splitter(tokenizer, WindowSpec(16, 8), special=2).split("heron fish", title=title)
    assert len(windows) == 1
    tokens = tokenizer.tokenize(windows[0])
    assert tokens == tokenizer.tokenize(title)[:7] + ["heron", "fish"]  # 7 = (16 - 2) // 2


def test_a_stride_longer_than_the_room_the_title_leaves_shrinks_to_it(tokenizer):
    title = "a b c d e"  # 5 tokens: 12 - 2 - 5 leaves 5 for text, less than the stride 12
    windows = Splitter(tokenizer, WindowSpec(12, 12), special=2).split(NUMBERS, title=title)
    assert [w.split()[5:] for w in windows] == [NUMBERS.split()[i:i + 5]
                                                for i in range(0, 40, 5)]


# -- aggregation by hand ---------------------------------------------------------------------

def test_each_aggregate_on_a_hand_example():
    pairs = [("a", 0.5), ("a", 0.75), ("a", -0.25), ("b", 0.25)]
    assert aggregate_scores(pairs, "max") == {"a": 0.75, "b": 0.25}
    assert aggregate_scores(pairs, "first") == {"a": 0.5, "b": 0.25}
    assert aggregate_scores(pairs, "sum") == {"a": 1.0, "b": 0.25}
    row, firsts = np.array([0.5, 0.75, -0.25, 0.25]), np.array([0, 3])
    assert reduce_groups(row, firsts, "max").tolist() == [0.75, 0.25]
    assert reduce_groups(row, firsts, "first").tolist() == [0.5, 0.25]
    assert reduce_groups(row, firsts, "sum").tolist() == [1.0, 0.25]


def test_query_windows_combine_by_max_or_mean():
    runs = Run({"q#0": {"a": 1.0, "b": 0.5}, "q#1": {"a": 0.0, "b": 0.75}})
    owner = {"q#0": "q", "q#1": "q"}
    assert combine_query_windows(runs, owner, "max") == {"q": {"a": 1.0, "b": 0.75}}
    assert combine_query_windows(runs, owner, "mean") == {"q": {"a": 0.5, "b": 0.625}}


# -- dense -----------------------------------------------------------------------------------

def by_hand(encoder, spec: str, query: str, how: str) -> dict[str, float]:
    """Every document's aggregate of its windows' inner products, computed apart."""
    splitter = Splitter(encoder.tokenizer, WindowSpec.parse(spec),
                        encoder.tokenizer.num_special_tokens_to_add())
    qvec = encoder.encode_queries([query])[0]
    out = {}
    for doc in DOCS:
        scores = encoder.encode_documents(splitter.split(doc.text, doc.title)) @ qvec
        out[doc.doc_id] = float({"max": scores.max(), "first": scores[0],
                                 "sum": scores.sum()}[how])
    return out


def assert_top(got: dict[str, float], want: dict[str, float], k: int,
               tol: float = 1e-5) -> None:
    ranked = sorted(want.items(), key=lambda item: -item[1])[:k]
    assert list(got) == [d for d, _ in ranked]
    assert np.allclose(list(got.values()), [s for _, s in ranked], atol=tol)


@pytest.mark.parametrize("how", ["max", "first", "sum"])
def test_dense_scores_each_document_by_its_windows(tiny_encoder, how):
    from cormorant.retrieval.encoders import SentenceTransformerEncoder

    stage = build_pipeline(f"dense(model={tiny_encoder}, passages=16/8, aggregate={how},"
                           " cache=false)", corpus())
    leaf = stage.leaves()[0]
    assert len(leaf.segments.items[0]) > 2 * len(DOCS)  # windows, not documents
    encoder = SentenceTransformerEncoder(str(tiny_encoder))
    # after another stage: the candidates re-scored from all their windows
    reranked = build_pipeline(f"bm25 >> dense(model={tiny_encoder}, passages=16/8,"
                              f" aggregate={how}, cache=false)", corpus())
    for qid, query in QUERIES.items():
        want = by_hand(encoder, "16/8", query, how)
        assert_top(stage.search({qid: query}, k=3)[qid], want, 3)
        got = reranked.search({qid: query}, k=6)[qid]
        assert np.allclose([got[d] for d in got], [want[d] for d in got], atol=1e-5)


def test_maxp_searches_more_windows_until_k_documents(tiny_encoder):
    """One document's windows fill the first windows asked for: the search goes on until it
    has k distinct documents, so MaxP is exact."""
    from cormorant.retrieval.encoders import SentenceTransformerEncoder

    docs = [Document("long", " ".join(["heron fish river"] * 40)),
            *(Document(f"s{i}", long_text(100 + i, 5)) for i in range(5))]
    stage = build_pipeline(f"dense(model={tiny_encoder}, passages=16/8, cache=false)",
                           Corpus.from_documents(docs))
    assert len(stage.leaves()[0].segments.items[0]) > 10
    encoder = SentenceTransformerEncoder(str(tiny_encoder))
    splitter = Splitter(encoder.tokenizer, WindowSpec(16, 8), 2)
    qvec = encoder.encode_queries(["heron fish river"])[0]
    want = {d.doc_id: float((encoder.encode_documents(splitter.split(d.text)) @ qvec).max())
            for d in docs}
    assert_top(stage.search("heron fish river", k=3)["0"], want, 3)


def test_long_queries_are_split_and_combined(tiny_encoder):
    from cormorant.retrieval.encoders import SentenceTransformerEncoder

    query = long_text(7, 30)
    stage = build_pipeline(f"dense(model={tiny_encoder}, passages=16/8, query_passages=8/4,"
                           " query_aggregate=mean, cache=false)", corpus())
    encoder = SentenceTransformerEncoder(str(tiny_encoder))
    pieces = Splitter(encoder.tokenizer, WindowSpec(8, 4), 2).split(query)
    assert len(pieces) > 3
    per_window = [by_hand(encoder, "16/8", piece, "max") for piece in pieces]
    want = {d.doc_id: float(np.mean([w[d.doc_id] for w in per_window])) for d in DOCS}
    assert_top(stage.search(query, k=len(DOCS))["0"], want, len(DOCS))


# -- chamfer and muvera ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["max", "sum"])
def test_chamfer_and_muvera_score_documents_by_their_windows(tiny_encoder, how):
    from cormorant.retrieval.chamfer import chamfer_scores
    from cormorant.retrieval.multivector import TokenEncoder

    encoder = TokenEncoder(str(tiny_encoder))
    splitter = Splitter(encoder.tokenizer, WindowSpec(16, 8), 2)
    query = encoder.encode_queries([QUERIES["a"]])[0]
    want = {}
    for doc in DOCS:
        windows = encoder.encode_documents(splitter.split(doc.text, doc.title))
        scores = [float(chamfer_scores(query, w, np.array([0]))[0]) for w in windows]
        want[doc.doc_id] = max(scores) if how == "max" else sum(scores)
    for kind in ("chamfer", "muvera"):  # muvera: flat FDEs, every window a candidate
        stage = build_pipeline(f"{kind}(model={tiny_encoder}, passages=16/8,"
                               f" aggregate={how})", corpus())
        assert_top(stage.search(QUERIES["a"], k=4)["0"], want, 4, tol=2e-3)  # float16 store


# -- the index: identity and writes ----------------------------------------------------------

def test_passages_is_part_of_the_index_and_aggregate_is_not(tiny_encoder, tmp_path):
    path = save_index(f"dense(model={tiny_encoder}, passages=16/8)", corpus(),
                      tmp_path / "index")
    with open_index(path) as handle:
        with pytest.raises(PipelineError, match=r"built with dense\(passages='16/8'\);"
                                                r" passages='32/16' would need a rebuild"):
            handle.open_pipeline(f"dense(model={tiny_encoder}, passages=32/16)")
        with pytest.raises(PipelineError, match="rebuild"):
            handle.open_pipeline(f"dense(model={tiny_encoder}, passages=none)")
        first = handle.open_pipeline("dense(aggregate=first)").search(QUERIES, k=6)
    fresh = build_pipeline(f"dense(model={tiny_encoder}, passages=16/8, aggregate=first)",
                           corpus()).search(QUERIES, k=6)
    for qid in QUERIES:
        assert list(first[qid]) == list(fresh[qid])
        assert np.allclose(list(first[qid].values()), list(fresh[qid].values()), atol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "chamfer"])
def test_writes_add_and_delete_every_window_of_a_document(tiny_encoder, tmp_path, kind):
    spec = f"{kind}(model={tiny_encoder}, passages=16/8)"
    path = save_index(spec, Corpus.from_documents(DOCS[:4]), tmp_path / "index")
    added = [DOCS[5], Document("d1", long_text(50, 40))]  # a new one and a longer d1
    with open_index(path, write=True) as handle:
        handle.live.add(added)
        handle.live.delete(["d2"])
        leaf = handle.pipeline.leaves()[0]
        docs = [DOCS[0], DOCS[3], *added]
        windows = len(Splitter(leaf.encoder.tokenizer, WindowSpec(16, 8), 2)
                      .split_documents(docs)[0])
        assert leaf.segments.count == windows  # live rows: the windows of live documents
        got = handle.open_pipeline(spec).search(QUERIES, k=5)
        handle.live.merge()
        merged = handle.open_pipeline(spec).search(QUERIES, k=5)
    want = build_pipeline(spec, Corpus.from_documents(docs)).search(QUERIES, k=5)
    for run in (got, merged):
        for qid in QUERIES:
            assert list(run[qid]) == list(want[qid])
            assert np.allclose(list(run[qid].values()), list(want[qid].values()), atol=1e-4)


# -- the cross-encoder -----------------------------------------------------------------------

def test_rerank_scores_the_candidates_windows(tmp_path):
    from cormorant.retrieval.rerank import CrossEncoderScorer
    from tests.test_environment import make_tiny_cross_encoder

    model = make_tiny_cross_encoder(tmp_path / "ce")
    scorer = CrossEncoderScorer(str(model))
    splitter = Splitter(scorer.tokenizer, WindowSpec(16, 8), special=0)
    for how in ("max", "first", "sum"):
        stage = build_pipeline(f"bm25 >> rerank(model={model}, passages=16/8,"
                               f" aggregate={how})", corpus())
        got = stage.search(QUERIES["b"], k=6)["0"]
        for doc_id, score in got.items():
            doc = next(d for d in DOCS if d.doc_id == doc_id)
            windows = splitter.split(doc.text, doc.title)
            scores = scorer.score([(QUERIES["b"], w) for w in windows])
            want = {"max": scores.max(), "first": scores[0], "sum": scores.sum()}[how]
            assert score == pytest.approx(float(want), abs=1e-4)


# -- bad parameters --------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "message"), [
    ("abc", "passages must be LENGTH/STRIDE in tokens, e.g. 128/64, got 'abc'"),
    ("16/32", "passages needs a STRIDE between 1 and LENGTH \\(16\\), got 32"),
    ("16/0", "passages needs a STRIDE between 1 and LENGTH"),
    ("4/2", "passages needs a LENGTH of at least 8 tokens, got 4"),
    ("16/8/4", "passages must be LENGTH/STRIDE"),
])
def test_bad_passages_get_one_line_messages(value, message):
    with pytest.raises(PipelineError, match=f"^dense: {message}"):
        build_pipeline(f"dense(passages='{value}')", corpus())


def test_windows_longer_than_the_model_reads_are_refused(tiny_encoder):
    with pytest.raises(PipelineError, match="passages=128/64 has windows longer than the 64"):
        build_pipeline(f"dense(model={tiny_encoder}, passages=128/64)", corpus())
    with pytest.raises(PipelineError, match="aggregate must be one of max, first, sum"):
        build_pipeline(f"dense(model={tiny_encoder}, aggregate=mean)", corpus())


def test_the_cli_says_what_is_wrong_with_passages_in_one_line(beir_dir, tmp_path):
    from tests.cli_support import assert_one_error_line, run_cli

    for value, message in (("abc", "passages must be LENGTH/STRIDE"),
                           ("64/128", "needs a STRIDE between 1 and LENGTH (64), got 128")):
        result = run_cli("index", "build", "-d", beir_dir, "-p", f"dense(passages={value})",
                         "-o", tmp_path / "index")
        assert_one_error_line(result, message)
