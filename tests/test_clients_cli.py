"""The real coding CLIs through a cliproxy process: one non-interactive prompt each.

Claude Code, Codex CLI and Gemini CLI (pinned versions from `.ci/install-clients.sh`) talk to
the proxy with the proxy key. The proxy sends the requests to the fake upstream's accounts.
A CLI can exit 0 with a broken stream: Claude Code falls back to a non-streaming request,
Codex prints an empty message without `response.output_item.done`, and Gemini CLI retries a
stream without finishReason. So besides the exit status and the printed text, each test
checks in the fake's recordings which upstream requests were made.
"""

import pytest

from tests.clients import (
    CLAUDE_MODEL,
    CODEX_MODEL,
    credential_problems,
    require_cli,
    run_claude_code,
    run_codex,
    run_gemini,
    summarize,
)
from tests.fakes import rate_limited

pytestmark = pytest.mark.timeout(150)

GEMINI_ROUTER_MODEL = "gemini-3.5-flash-lite"
# Gemini CLI 0.61.0 picks this model when its router scores the prompt as simple. The fake
# builds the router's reply from its JSON schema, which gives complexity_score 1, the lowest.
GEMINI_ROUTED_MODEL = "gemini-3.8-flash"


# The CLI fixtures come first in each test's arguments, so a missing CLI skips the test
# before a proxy is started.


@pytest.fixture
def claude():
    return require_cli("claude")


@pytest.fixture
def codex():
    return require_cli("codex")


@pytest.fixture
def gemini():
    return require_cli("gemini")


@pytest.fixture
def fill_first(start_proxy):
    """A proxy that always tries account A first, then B, then C."""
    return start_proxy(routing={"strategy": "fill-first"})


def failure_details(run, upstream, proxy):
    """Return the CLI's output, the upstream requests and the proxy log, for assertion messages."""
    return (
        f"{run.describe()}\n--- upstream requests ---\n{summarize(upstream.requests())}\n"
        f"--- proxy log (end) ---\n{proxy.log_text()[-3000:]}"
    )


def assert_credentials(records):
    for record in records:
        assert credential_problems(record) == [], summarize(records)


def is_streaming_messages_call(record):
    return (
        record.method == "POST"
        and record.path == "/v1/messages"
        and isinstance(record.json, dict)
        and record.json.get("stream") is True
    )


# ----- Claude Code -----


def check_claude_code_run(run, upstream, proxy, served_by):
    """Check a Claude Code run that one streaming /v1/messages call to a `served_by` account served."""
    details = failure_details(run, upstream, proxy)
    assert run.returncode == 0, details
    assert "Hello from claude-" in run.stdout, details

    answered = [record for record in upstream.requests() if record.status == 200]
    assert len(answered) == 1, details
    assert answered[0].account in served_by, details
    assert f"Hello from {answered[0].account}." in run.stdout, details
    assert is_streaming_messages_call(answered[0]), details
    assert answered[0].json["model"] == CLAUDE_MODEL, details
    assert answered[0].client_disconnected is False, details

    # Claude Code resends the request without `stream` when it cannot use the stream.
    fallbacks = [record for record in upstream.requests() if not is_streaming_messages_call(record)]
    assert fallbacks == [], details
    assert_credentials(upstream.requests())


def test_claude_code_prompt(claude, proxy, upstream, tmp_path):
    run = run_claude_code(claude, proxy.base_url, tmp_path)

    check_claude_code_run(run, upstream, proxy, served_by={"claude-A", "claude-B", "claude-C"})
    assert upstream.count() == 1


def test_claude_code_fails_over_on_429(claude, fill_first, upstream, tmp_path):
    upstream.enqueue("claude-A", rate_limited("retry-after-seconds", 60))

    run = run_claude_code(claude, fill_first.base_url, tmp_path)

    check_claude_code_run(run, upstream, fill_first, served_by={"claude-B"})
    accounts = [(record.account, record.status) for record in upstream.requests()]
    assert accounts == [("claude-A", 429), ("claude-B", 200)], summarize(upstream.requests())


# ----- Codex CLI -----


def check_codex_run(run, last_message, upstream, proxy, served_by):
    """Check a Codex run that one streaming /responses call to a `served_by` account served."""
    details = failure_details(run, upstream, proxy)
    assert run.returncode == 0, details
    assert "Hello from codex-" in run.stdout, details
    assert last_message.read_text().startswith("Hello from codex-"), details

    answered = [record for record in upstream.requests() if record.status == 200]
    assert len(answered) == 1, details
    record = answered[0]
    assert record.account in served_by, details
    assert f"Hello from {record.account}." in run.stdout, details
    assert (record.method, record.path) == ("POST", "/v1/responses"), details
    assert record.json.get("stream") is True, details
    assert record.json["model"] == CODEX_MODEL, details
    assert record.client_disconnected is False, details
    assert_credentials(upstream.requests())


def test_codex_exec_prompt(codex, proxy, upstream, tmp_path):
    run, last_message = run_codex(codex, proxy.base_url, tmp_path)

    check_codex_run(run, last_message, upstream, proxy, served_by={"codex-A", "codex-B", "codex-C"})
    assert upstream.count() == 1


def test_codex_exec_fails_over_on_429(codex, fill_first, upstream, tmp_path):
    upstream.enqueue("codex-A", rate_limited("codex-resets-in", 60))

    run, last_message = run_codex(codex, fill_first.base_url, tmp_path)

    check_codex_run(run, last_message, upstream, fill_first, served_by={"codex-B"})
    accounts = [(record.account, record.status) for record in upstream.requests()]
    assert accounts == [("codex-A", 429), ("codex-B", 200)], summarize(upstream.requests())


# ----- Gemini CLI -----


def gemini_calls(upstream, method):
    return [record for record in upstream.requests() if record.path.endswith(f":{method}")]


def check_gemini_run(run, upstream, proxy, model, served_by):
    """Check a Gemini CLI run that one SSE stream call for `model` to a `served_by` account served."""
    details = failure_details(run, upstream, proxy)
    assert run.returncode == 0, details
    assert "Hello from gemini-" in run.stdout, details
    # Without a finishReason Gemini CLI prints this, retries and still exits 0.
    assert "without a finish reason" not in run.stderr, details

    streams = [record for record in gemini_calls(upstream, "streamGenerateContent") if record.status == 200]
    assert len(streams) == 1, details
    stream = streams[0]
    assert stream.account in served_by, details
    assert stream.path == f"/v1beta/models/{model}:streamGenerateContent", details
    assert stream.query.get("alt") == "sse", details
    assert stream.client_disconnected is False, details
    # Printed once: a retried stream prints the text again.
    assert run.stdout.count("Hello from") == 1, details
    assert f"Hello from {stream.account}." in run.stdout, details
    assert_credentials(upstream.requests())


def test_gemini_prompt_with_model(gemini, proxy, upstream, tmp_path):
    run = run_gemini(gemini, proxy.base_url, tmp_path, model="gemini-2.5-pro")

    check_gemini_run(run, upstream, proxy, "gemini-2.5-pro", served_by={"gemini-A", "gemini-B", "gemini-C"})
    assert gemini_calls(upstream, "generateContent") == [], summarize(upstream.requests())
    assert upstream.count() == 1


def test_gemini_prompt_with_model_router(gemini, proxy, upstream, tmp_path):
    run = run_gemini(gemini, proxy.base_url, tmp_path)

    details = failure_details(run, upstream, proxy)
    router_calls = gemini_calls(upstream, "generateContent")
    assert len(router_calls) == 1, details
    router = router_calls[0]
    assert router.path == f"/v1beta/models/{GEMINI_ROUTER_MODEL}:generateContent", details
    assert router.status == 200, details
    assert "responseJsonSchema" in router.json["generationConfig"], details
    # A router reply that Gemini CLI cannot parse only shows as a "[Routing]" error on stderr.
    assert "[Routing]" not in run.stderr, details

    check_gemini_run(run, upstream, proxy, GEMINI_ROUTED_MODEL, served_by={"gemini-A", "gemini-B", "gemini-C"})
    assert upstream.requests()[0].seq == router.seq, details
    assert upstream.count() == 2, details


def test_gemini_fails_over_on_429(gemini, fill_first, upstream, tmp_path):
    upstream.enqueue("gemini-A", rate_limited("google-retry-info", 60))

    run = run_gemini(gemini, fill_first.base_url, tmp_path, model="gemini-2.5-pro")

    check_gemini_run(run, upstream, fill_first, "gemini-2.5-pro", served_by={"gemini-B"})
    accounts = [(record.account, record.status) for record in upstream.requests()]
    assert accounts == [("gemini-A", 429), ("gemini-B", 200)], summarize(upstream.requests())
