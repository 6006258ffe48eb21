"""`GET /metrics` end to end: who may read it and what it counts."""

from __future__ import annotations

import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from store.metrics import CONTENT_TYPE
from tests.fakes import USAGE, Slow, rate_limited
from tests.harness import ProxyProcess
from tests.test_tap_usage import CLAUDE, wait_for_records

MANAGEMENT_PASSWORD = "metrics-test-management-password-01234"
KEY_HEADERS = {"authorization": f"Bearer {MANAGEMENT_PASSWORD}"}
ENV = {"MANAGEMENT_PASSWORD": MANAGEMENT_PASSWORD}


def scrape(proxy: ProxyProcess, headers: dict[str, str] = KEY_HEADERS) -> dict[tuple[str, tuple], float]:
    response = proxy.get("/metrics", key=None, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def claude_request_labels(status: str = "200") -> tuple:
    return tuple(sorted(
        {"route": "anthropic:generate", "provider": "claude", "model": "claude-sonnet-4-5", "status": status}.items()
    ))


def test_metrics_require_management_key(start_proxy, upstream):
    proxy = start_proxy(env=ENV)
    assert proxy.get("/metrics", key=None).status_code == 401
    assert proxy.get("/metrics").status_code == 401  # a proxy key is not a management key
    assert proxy.get("/metrics", key=None, headers={"x-management-key": "wrong"}).status_code == 401
    assert proxy.get("/metrics", key=None, headers={"x-management-key": MANAGEMENT_PASSWORD}).status_code == 200
    assert requests.post(proxy.base_url + "/metrics", headers=KEY_HEADERS, timeout=10).status_code == 405


def test_metrics_loopback_option(start_proxy, upstream):
    proxy = start_proxy(**{"metrics-allow-loopback": True})
    assert proxy.get("/metrics", key=None).status_code == 200


def test_metrics_count_requests_and_tokens(start_proxy, upstream):
    proxy = start_proxy(env=ENV)
    proxy.post("/v1/messages", CLAUDE)
    proxy.post("/v1/messages", {**CLAUDE, "stream": True})
    proxy.post("/v1/messages", CLAUDE, key="wrong-key")
    samples = scrape(proxy)

    assert samples[("cliproxy_requests_total", claude_request_labels())] == 2
    assert samples[("cliproxy_requests_total", tuple(sorted(
        {"route": "anthropic:generate", "provider": "", "model": "unknown", "status": "401"}.items()
    )))] == 1
    assert samples[("cliproxy_tokens_total", (("kind", "input"),))] == 2 * USAGE.input
    assert samples[("cliproxy_tokens_total", (("kind", "output"),))] == 2 * USAGE.output
    assert samples[("cliproxy_tokens_total", (("kind", "cache_read"),))] == 2 * USAGE.cache_read
    assert samples[("cliproxy_tokens_total", (("kind", "cache_write"),))] == 2 * USAGE.cache_write
    assert samples[("cliproxy_request_latency_seconds_count", ())] == 3
    assert samples[("cliproxy_ttfb_seconds_count", ())] == 3
    assert samples[("cliproxy_open_streams", ())] == 0
    ready = (("account", "claude-api-key#0"), ("provider", "claude"), ("state", "ready"))
    assert samples[("cliproxy_account_state", ready)] == 1


def test_metrics_show_failover_and_cooling(start_proxy, upstream):
    proxy = start_proxy(env=ENV, routing={"strategy": "fill-first"})
    upstream.enqueue("claude-A", rate_limited("retry-after-seconds", 60))
    assert proxy.post("/v1/messages", CLAUDE).status_code == 200
    samples = scrape(proxy)

    assert samples[("cliproxy_failovers_total", (("provider", "claude"),))] == 1
    cooling = (("account", "claude-api-key#0"), ("provider", "claude"), ("state", "cooling"))
    assert samples[("cliproxy_account_state", cooling)] == 1
    assert 50 < samples[("cliproxy_account_cooldown_seconds", (("account", "claude-api-key#0"),))] <= 60


def test_metrics_open_streams(start_proxy, upstream):
    proxy = start_proxy(env=ENV, routing={"strategy": "fill-first"})
    upstream.enqueue("claude-A", Slow(0.3, events=10))
    stream = threading.Thread(target=proxy.post, args=("/v1/messages", {**CLAUDE, "stream": True}))
    stream.start()
    try:
        deadline = time.monotonic() + 10
        while scrape(proxy)[("cliproxy_open_streams", ())] != 1:
            assert time.monotonic() < deadline, "the stream never showed in cliproxy_open_streams"
            time.sleep(0.05)
    finally:
        stream.join(30)
    wait_for_records(proxy.directory, 1)
    assert scrape(proxy)[("cliproxy_open_streams", ())] == 0
