"""The official Python SDKs (openai, anthropic, google-genai) through a cliproxy process.

Each SDK gets the proxy as its base URL and the proxy key as its API key. Every test checks
the text that the SDK returns (the fake names the account that served it) and the request
that reached the fake upstream: its path, and the account's own credentials in place of the
proxy key.
"""

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from tests.clients import CLAUDE_MODEL, CODEX_MODEL, PROMPT, credential_problems, summarize
from tests.fakes import CHAT_USAGE, COUNT_TOKENS, GEMINI_USAGE, RESPONSES_USAGE, USAGE, rate_limited
from tests.harness import PROXY_KEY

GEMINI_MODEL = "gemini-2.5-flash"
SDK_TIMEOUT = 30.0
"""Seconds an SDK call may take; the fake responds within milliseconds."""


def openai_client(proxy):
    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=PROXY_KEY, max_retries=0, timeout=SDK_TIMEOUT)


def anthropic_client(proxy):
    return anthropic.Anthropic(base_url=proxy.base_url, api_key=PROXY_KEY, max_retries=0, timeout=SDK_TIMEOUT)


def genai_client(proxy, api_version=None):
    """Return a google-genai client; `api_version` None keeps the SDK's default (v1 in 3.6.1).

    Keep the client in a variable while it is used: google-genai closes its HTTP client when
    the `Client` object is garbage-collected, even while `client.models` is still in use.
    """
    options = genai_types.HttpOptions(base_url=proxy.base_url, api_version=api_version, timeout=int(SDK_TIMEOUT * 1000))
    return genai.Client(api_key=PROXY_KEY, http_options=options)


@pytest.fixture
def fill_first(start_proxy):
    """A proxy that always tries account A first, then B, then C."""
    return start_proxy(routing={"strategy": "fill-first"})


def only_request(upstream):
    """Return the one request the fake upstream received, with correct credentials."""
    records = upstream.requests()
    assert len(records) == 1, summarize(records)
    record = records[0]
    assert record.status == 200, summarize(records)
    assert credential_problems(record) == [], summarize(records)
    return record


def check_served(text, record, provider, path):
    """Check that `text` came from the account of `record`, a `provider` account, via `path`."""
    assert record.account.startswith(f"{provider}-"), summarize([record])
    assert record.path == path, summarize([record])
    assert text == f"Hello from {record.account}.", summarize([record])


def check_failed_over(upstream, provider):
    accounts = [(record.account, record.status) for record in upstream.requests()]
    assert accounts == [(f"{provider}-A", 429), (f"{provider}-B", 200)], summarize(upstream.requests())
    for record in upstream.requests():
        assert credential_problems(record) == [], summarize(upstream.requests())


# ----- openai -----


def test_openai_chat_completion(proxy, upstream):
    completion = openai_client(proxy).chat.completions.create(
        model=CODEX_MODEL, messages=[{"role": "user", "content": PROMPT}],
    )

    record = only_request(upstream)
    check_served(completion.choices[0].message.content, record, "codex", "/v1/chat/completions")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == CHAT_USAGE["total_tokens"]
    assert record.json["model"] == CODEX_MODEL


def test_openai_chat_stream_with_usage(proxy, upstream):
    stream = openai_client(proxy).chat.completions.create(
        model=CODEX_MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    record = only_request(upstream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    check_served(text, record, "codex", "/v1/chat/completions")
    assert record.json["stream"] is True
    assert record.json["stream_options"] == {"include_usage": True}
    # With include_usage the last chunk has no choices and carries the usage.
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == USAGE.input
    assert chunks[-1].usage.completion_tokens == USAGE.output


def test_openai_chat_compat_alias(proxy, upstream):
    completion = openai_client(proxy).chat.completions.create(
        model="compat-model", messages=[{"role": "user", "content": PROMPT}],
    )

    record = only_request(upstream)
    check_served(completion.choices[0].message.content, record, "compat", "/v1/chat/completions")
    assert record.json["model"] == "upstream-model-x"


def test_openai_responses_create(proxy, upstream):
    response = openai_client(proxy).responses.create(model=CODEX_MODEL, input=PROMPT)

    record = only_request(upstream)
    check_served(response.output_text, record, "codex", "/v1/responses")
    assert response.status == "completed"
    assert response.usage.total_tokens == RESPONSES_USAGE["total_tokens"]


def test_openai_responses_stream(proxy, upstream):
    with openai_client(proxy).responses.stream(model=CODEX_MODEL, input=PROMPT) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        # Raises unless the stream ended with response.completed.
        final = stream.get_final_response()

    record = only_request(upstream)
    check_served("".join(deltas), record, "codex", "/v1/responses")
    assert record.json["stream"] is True
    assert final.output_text == "".join(deltas)
    assert final.usage.output_tokens == USAGE.output


# ----- anthropic -----


def test_anthropic_messages_create(proxy, upstream):
    message = anthropic_client(proxy).messages.create(
        model=CLAUDE_MODEL, max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
    )

    record = only_request(upstream)
    check_served(message.content[0].text, record, "claude", "/v1/messages")
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == USAGE.output


def test_anthropic_messages_stream(proxy, upstream):
    with anthropic_client(proxy).messages.stream(
        model=CLAUDE_MODEL, max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    record = only_request(upstream)
    check_served(text, record, "claude", "/v1/messages")
    assert record.json["stream"] is True
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == USAGE.output


def test_anthropic_count_tokens(proxy, upstream):
    counted = anthropic_client(proxy).messages.count_tokens(
        model=CLAUDE_MODEL, messages=[{"role": "user", "content": PROMPT}],
    )

    record = only_request(upstream)
    assert record.account.startswith("claude-"), summarize([record])
    assert record.path == "/v1/messages/count_tokens"
    assert counted.input_tokens == COUNT_TOKENS


# ----- google-genai -----

API_VERSIONS = [pytest.param(None, "v1", id="default-v1"), pytest.param("v1beta", "v1beta", id="v1beta")]


@pytest.mark.parametrize("api_version, path_version", API_VERSIONS)
def test_genai_generate_content(proxy, upstream, api_version, path_version):
    client = genai_client(proxy, api_version)
    response = client.models.generate_content(model=GEMINI_MODEL, contents=PROMPT)

    record = only_request(upstream)
    check_served(response.text, record, "gemini", f"/{path_version}/models/{GEMINI_MODEL}:generateContent")
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert response.usage_metadata.total_token_count == GEMINI_USAGE["totalTokenCount"]


@pytest.mark.parametrize("api_version, path_version", API_VERSIONS)
def test_genai_generate_content_stream(proxy, upstream, api_version, path_version):
    client = genai_client(proxy, api_version)
    chunks = list(client.models.generate_content_stream(model=GEMINI_MODEL, contents=PROMPT))

    record = only_request(upstream)
    text = "".join(chunk.text or "" for chunk in chunks)
    check_served(text, record, "gemini", f"/{path_version}/models/{GEMINI_MODEL}:streamGenerateContent")
    assert record.query.get("alt") == "sse"
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == GEMINI_USAGE["totalTokenCount"]


# ----- failover on 429, streaming -----


def test_anthropic_stream_fails_over_on_429(fill_first, upstream):
    upstream.enqueue("claude-A", rate_limited("retry-after-seconds", 60))

    with anthropic_client(fill_first).messages.stream(
        model=CLAUDE_MODEL, max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        text = "".join(stream.text_stream)

    assert text == "Hello from claude-B."
    check_failed_over(upstream, "claude")


def test_openai_responses_stream_fails_over_on_429(fill_first, upstream):
    upstream.enqueue("codex-A", rate_limited("codex-resets-in", 60))

    with openai_client(fill_first).responses.stream(model=CODEX_MODEL, input=PROMPT) as stream:
        final = stream.get_final_response()

    assert final.output_text == "Hello from codex-B."
    check_failed_over(upstream, "codex")


def test_openai_chat_stream_fails_over_on_429(fill_first, upstream):
    upstream.enqueue("codex-A", rate_limited("retry-after-seconds", 60))

    stream = openai_client(fill_first).chat.completions.create(
        model=CODEX_MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text == "Hello from codex-B."
    check_failed_over(upstream, "codex")


def test_genai_stream_fails_over_on_429(fill_first, upstream):
    upstream.enqueue("gemini-A", rate_limited("google-retry-info", 60))

    client = genai_client(fill_first)
    chunks = client.models.generate_content_stream(model=GEMINI_MODEL, contents=PROMPT)
    text = "".join(chunk.text or "" for chunk in chunks)

    assert text == "Hello from gemini-B."
    check_failed_over(upstream, "gemini")
