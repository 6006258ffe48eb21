"""The tap's pure parts: the usage report command, outcomes, known secrets, stream decoding."""

from __future__ import annotations

import gzip
import io
import zlib
from datetime import datetime
from types import SimpleNamespace

import pytest
import yaml

from addons.flowstate import Attempt as FlowAttempt
from addons.flowstate import FlowState
from addons.tap import IncrementalDecoder, known_secrets, request_outcome
from config import ConfigFile
from config.defaults import example_config_text
from pool import Account, UpstreamKind
from providers.dialects import Dialect
from providers.usage import SSEUsageObserver, Usage
from store.records import Outcome, RequestRecord
from store.report import print_usage_report, usage_database_path
from store.usage_store import UsageStore

NOW = datetime(2026, 3, 15, 12, 0, 0).timestamp()


def make_record(request_id: str, timestamp: float, **overrides) -> RequestRecord:
    values = dict(
        request_id=request_id, timestamp=timestamp, route="anthropic:generate", dialect="anthropic",
        key_label="key-0badc0de", requested_model="claude-sonnet-4-5", upstream_model="claude-sonnet-4-5",
        provider="claude", account="claude-api-key#0", status=200, outcome=Outcome.SUCCESS,
        latency_ms=12.0, usage=Usage(input=11, output=7, cache_read=3, cache_write=2),
    )
    values.update(overrides)
    return RequestRecord(**values)


def load_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("api-keys: [sk-unit-test-proxy-key-0123456789]\n")
    return ConfigFile(path).load()


def test_usage_report_prints_day_and_month(tmp_path):
    config = load_config(tmp_path)
    store = UsageStore(usage_database_path(tmp_path), retention_days=None)
    store.submit(make_record("today-1", NOW - 60))
    store.submit(make_record("today-2", NOW - 120, outcome=Outcome.UPSTREAM_ERROR, status=529, usage=None))
    store.submit(make_record("this-month", datetime(2026, 3, 2, 9, 0).timestamp(), account="claude-api-key#1"))
    store.submit(make_record("last-month", datetime(2026, 2, 20, 9, 0).timestamp()))
    store.close()

    out = io.StringIO()
    assert print_usage_report(config, now=NOW, out=out) == 0
    today, month = out.getvalue().split("\n\n")

    assert today.splitlines()[0] == "Today"
    assert today.splitlines()[2].split() == [
        "key-0badc0de", "claude-sonnet-4-5", "claude-api-key#0", "2", "1", "16", "3", "7", "23", "1",
    ]
    assert month.splitlines()[0] == "This month"
    assert len(month.splitlines()) == 5  # title, header, two accounts, TOTAL
    assert month.splitlines()[-1].split()[:2] == ["TOTAL", "3"]


def test_usage_report_without_database(tmp_path, capsys):
    config = load_config(tmp_path)
    assert print_usage_report(config) == 0
    assert "No usage recorded yet" in capsys.readouterr().out
    assert not usage_database_path(tmp_path).exists()


@pytest.mark.parametrize(
    "outcome_flag, status, error, attempts, account, expected",
    [
        ("", 200, None, 1, True, Outcome.SUCCESS),
        ("rejected", 401, None, 0, False, Outcome.REJECTED),
        ("", 200, "Client disconnected.", 1, True, Outcome.CLIENT_DISCONNECTED),
        ("", 200, "peer closed connection", 1, True, Outcome.UPSTREAM_ERROR),
        ("", 529, None, 2, True, Outcome.UPSTREAM_ERROR),
        ("", 429, None, 0, False, Outcome.PROXY_ERROR),
        ("", 404, None, 0, False, Outcome.REJECTED),
        ("", None, "connect failed", 0, False, Outcome.PROXY_ERROR),
    ],
)
def test_request_outcome(outcome_flag, status, error, attempts, account, expected):
    state = FlowState.new(Dialect.ANTHROPIC, None)
    state.outcome = outcome_flag
    state.attempts = [FlowAttempt("claude-api-key#0", 200)] * attempts
    state.account = object() if account else None
    response = SimpleNamespace(status_code=status) if status is not None else None
    flow_error = SimpleNamespace(msg=error) if error is not None else None
    assert request_outcome(state, response, flow_error) is expected


def test_known_secrets_cover_config_and_accounts(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "api-keys: [proxy-key-aaaaaaaaaaaa]\n"
        "proxy-url: socks5://user:proxy-password-bbbb@127.0.0.1:1080\n"
        "remote-management: {secret-key: management-key-cccccccc}\n"
    )
    config = ConfigFile(path).load()
    account = Account(
        id="file:a.json", label="a.json", kind=UpstreamKind.GEMINI_CLI, secret="access-token-dddd",
        base_url="http://127.0.0.1:9", source="file", refresh_token="refresh-token-eeee",
        headers={"X-Custom-Token": "header-token-ffff", "User-Agent": "not-a-secret"},
        data={"token": {"id_token": "id-token-gggg"}},
    )
    secrets = known_secrets(config, [account], ["generated-key-hhhh"])
    assert secrets == {
        "proxy-key-aaaaaaaaaaaa", "proxy-password-bbbb", "management-key-cccccccc",
        "access-token-dddd", "refresh-token-eeee", "header-token-ffff", "id-token-gggg",
        "generated-key-hhhh",
    }


def sse_usage_stream() -> bytes:
    return (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
        b'{"input_tokens":11,"cache_read_input_tokens":3,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":7}}\n\n'
    )


@pytest.mark.parametrize("name, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_decoder_feeds_usage_observer(name, compress):
    decode = IncrementalDecoder.for_encoding(name)
    observer = SSEUsageObserver("anthropic")
    compressed = compress(sse_usage_stream())
    for start in range(0, len(compressed), 7):
        observer.feed(decode(compressed[start : start + 7]))
    assert observer.usage == Usage(input=11, output=7, cache_read=3)


def test_decoder_stops_after_invalid_data():
    decode = IncrementalDecoder.for_encoding("gzip")
    assert decode(b"not gzip at all") == b""
    assert decode(gzip.compress(b"data: {}\n\n")) == b""
    assert IncrementalDecoder.for_encoding("br") is None


TAP_CONFIG_KEYS = {
    "usage-retention-days": 30,
    "error-logs-max-files": 10,
    "logs-max-total-size-mb": 0,
    "metrics-allow-loopback": False,
    "body-size-limit-mb": 64,
}


def test_example_config_documents_tap_keys(tmp_path):
    text = example_config_text()
    lines = text.splitlines()
    for key, default in TAP_CONFIG_KEYS.items():
        [index] = [index for index, line in enumerate(lines) if line.startswith(f"{key}:")]
        assert lines[index - 1].startswith("# "), key
        assert yaml.safe_load(lines[index]) == {key: default}, key
    # The documented values are the defaults, so a first-start config behaves as without them.
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("__GENERATED_KEY__", "sk-unit-test-proxy-key-0123456789"))
    config = ConfigFile(path).load()
    assert config.usage_retention_days == 30
    assert config.error_logs_max_files == 10
    assert config.logs_max_total_size_mb == 0
    assert config.body_size_limit == 64 << 20
