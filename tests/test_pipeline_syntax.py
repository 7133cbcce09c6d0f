import pytest

from cormorant.errors import PipelineError
from cormorant.pipeline_syntax import Call, Cutoff, Leaf, Scale, Sum, Then, leaves, parse


@pytest.mark.parametrize("text", [
    "bm25",
    "rrf(bm25, dense) % 100",
    "bm25 % 100 >> dense",
    "0.3 * bm25 + dense",
    "rrf(bm25.lucene(rm3=true), dense(model=/models/x), k=10)",
])
def test_string_form_round_trips(text):
    assert str(parse(text)) == text
    assert str(parse(str(parse(text)))) == text


def test_precedence_follows_python():
    spec = parse("bm25 + dense % 10 >> dense * 2")
    assert isinstance(spec, Then)
    assert isinstance(spec.first, Sum)
    assert isinstance(spec.first.stages[1], Cutoff)
    assert isinstance(spec.second, Scale) and spec.second.weight == 2.0


def test_paths_need_no_quotes_and_values_are_typed():
    spec = parse("dense(model=/home/me/my model, batch_size=16, cache=false, x=0.5)")
    assert spec == Leaf("dense", {"model": "/home/me/my model", "batch_size": 16,
                                  "cache": False, "x": 0.5})


def test_quoted_values_may_hold_commas():
    assert parse("dense(model='a,b)')").params == {"model": "a,b)"}


def test_leaves_in_order():
    spec = parse("rrf(bm25, dense(model=m)) >> dense")
    assert [leaf.name for leaf in leaves(spec)] == ["bm25", "dense", "dense"]
    assert isinstance(parse("rrf(bm25, dense)"), Call)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("bm25 %", "positive integer"),
    ("bm25 % 0", "positive integer"),
    ("rrf(bm25, dense", "expected ','"),
    ("bm25 dense", "unexpected"),
    ("dense(model=)", "missing value"),
    ("dense(model=a, model=b)", "given twice"),
    ("__import__('os').system('true')", "cannot parse"),
    ("2 bm25", "followed by"),
])
def test_errors_point_at_the_problem(text, message):
    with pytest.raises(PipelineError, match=message):
        parse(text)
