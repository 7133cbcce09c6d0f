"""The OpenAI-compatible backend against a real local server process (127.0.0.1) serving a
tiny real model: completions, chat, the key from the environment, retries, timeouts and the
concurrency limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from cormorant.errors import CormorantError
from cormorant.llm import GenerationParams, load_llm
from tests.llm_support import LLMServer, make_tiny_llm

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
KEY_ENV = "CORMORANT_TEST_LLM_KEY"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("llm-server") / "model")


@pytest.fixture(scope="module")
def server(tiny_model: Path):  # noqa: ANN201
    with LLMServer(tiny_model, tiny_model.parent / "server.log", key_env=KEY_ENV,
                   env={KEY_ENV: "s3cret"}) as running:
        yield running


@pytest.fixture
def client(server: LLMServer, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from cormorant.llm.openai import OpenAIModel

    monkeypatch.setenv(KEY_ENV, "s3cret")
    server.faults()

    def make(**options: object) -> OpenAIModel:
        return OpenAIModel("tiny", base_url=server.url, api_key_env=KEY_ENV,
                           **{"backoff": 0.05, **options})
    return make


def test_completions_and_chat_with_the_key_from_the_environment(server: LLMServer, client,  # noqa: ANN001
                                                                tiny_model: Path) -> None:
    from cormorant.llm.server import chat_prompt

    # What the same model answers in process: the server must give exactly that back.
    local = load_llm(f"transformers:{tiny_model}", cache=False)
    params = GenerationParams(max_new_tokens=4)
    prompts = ["the sun and", "cats and"]
    expected = [t.strip() for t in local.generate(prompts, params)]
    assert all(expected)  # the seeded tiny model says something, so equality means something
    texts = client().generate(prompts, params)
    assert texts == expected
    assert client().generate(prompts, params) == texts  # greedy: repeatable

    # Chat goes through the chat prompt (role lines here: the tiny model has no template),
    # not the bare text, and the reply is read from the message.
    in_chat = chat_prompt(local, [{"role": "user", "content": "hello"}])
    reply = client(chat=True).generate(["hello"], params)[0]
    assert reply == local.generate([in_chat], params)[0].strip()
    assert reply != local.generate(["hello"], params)[0].strip()
    assert set(server.stats()["auth"]) == {"Bearer s3cret"}


def test_a_wrong_key_fails_at_once(server: LLMServer, client, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(CormorantError, match="HTTP 401"):
        client(retries=3).generate(["cats"], GenerationParams(max_new_tokens=2))
    assert server.stats()["requests"] == 1  # a 4xx is not retried


def test_5xx_answers_are_retried(server: LLMServer, client) -> None:  # noqa: ANN001
    server.faults(fail_next=2)
    assert len(client(retries=2).generate(["cats"], GenerationParams(max_new_tokens=2))) == 1
    assert server.stats()["requests"] == 3
    server.faults(fail_next=5)
    with pytest.raises(CormorantError, match="HTTP 503 after 2 tries"):
        client(retries=1).generate(["cats"], GenerationParams(max_new_tokens=2))


def test_a_slow_server_times_out(server: LLMServer, client) -> None:  # noqa: ANN001
    server.faults(delay=1.5)
    with pytest.raises(CormorantError, match="no answer after 2 tries.*Timeout"):
        client(timeout=0.3, retries=1).generate(["cats"], GenerationParams(max_new_tokens=2))


def test_concurrency_is_limited(server: LLMServer, client) -> None:  # noqa: ANN001
    server.faults(delay=0.3)
    prompts = [f"cats {i}" for i in range(8)]
    assert len(client(concurrency=2).generate(prompts, GenerationParams(max_new_tokens=2))) == 8
    stats = server.stats()
    assert stats["requests"] == 8 and stats["peak"] == 2


def test_a_reformulation_pipeline_runs_against_the_server(server: LLMServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cormorant.data import DatasetSpec
    from cormorant.retrieval.assemble import build_pipeline
    from tests.conftest import write_beir

    monkeypatch.setenv(KEY_ENV, "s3cret")
    server.faults()
    ds = DatasetSpec(write_beir(tmp_path / "tiny")).load()
    text = (f"genqr_fusion(bm25, llm=openai:tiny, llm_base_url={server.url},"
            f" llm_api_key_env={KEY_ENV}, n=3, max_new_tokens=3)")
    pipe = build_pipeline(text, ds.corpus)
    run = pipe.search({"q1": "vitamin d and depression"}, k=3)
    assert "d1" in run["q1"]
    assert server.stats()["requests"] == 3  # one per instruction
    llm = pipe.stage.expander.llm
    assert load_llm(llm) is llm and llm.misses == 3
    pipe.search({"q1": "vitamin d and depression"}, k=3)
    assert server.stats()["requests"] == 3  # the second search came from the cache
