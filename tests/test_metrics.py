"""Prometheus metrics: what `observe` and `set_account_states` put in the exposition."""

import time

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from providers.usage import Usage
from store import metrics as metrics_module
from store.metrics import CONTENT_TYPE, Metrics
from store.records import Attempt, Outcome, RequestRecord


def make_record(**overrides) -> RequestRecord:
    values = dict(
        request_id="r1",
        timestamp=time.time(),
        route="POST /v1/messages",
        dialect="anthropic",
        key_label="team",
        requested_model="claude-sonnet-4-5",
        upstream_model="claude-sonnet-4-5",
        provider="claude",
        account="alice.json",
        status=200,
        outcome=Outcome.SUCCESS,
        latency_ms=1500.0,
        ttfb_ms=250.0,
        usage=Usage(input=10, output=20, cache_read=30, cache_write=5, reasoning=4),
        attempts=[Attempt("bob.json", 429, 30.0, "rate limited"), Attempt("alice.json", 200)],
    )
    values.update(overrides)
    return RequestRecord(**values)


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    """Parse the rendered text back into {(sample name, sorted labels): value}."""
    parsed = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


def test_content_type_is_prometheus_text():
    assert CONTENT_TYPE.startswith("text/plain; version=")


def test_render_lists_metric_names():
    text = Metrics().render().decode()
    for name in (
        "cliproxy_requests_total",
        "cliproxy_tokens_total",
        "cliproxy_failovers_total",
        "cliproxy_request_latency_seconds",
        "cliproxy_ttfb_seconds",
        "cliproxy_open_streams",
        "cliproxy_account_state",
        "cliproxy_account_cooldown_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_private_registry():
    metrics = Metrics()
    metrics.observe(make_record())
    assert REGISTRY.get_sample_value(
        "cliproxy_requests_total",
        {"route": "POST /v1/messages", "provider": "claude",
         "model": "claude-sonnet-4-5", "status": "200"},
    ) is None


def test_two_instances_independent():
    first, second = Metrics(), Metrics()
    first.observe(make_record())
    assert ("cliproxy_requests_total", (("model", "claude-sonnet-4-5"), ("provider", "claude"),
            ("route", "POST /v1/messages"), ("status", "200"))) not in samples(second)


def test_observe_counts_request():
    metrics = Metrics()
    metrics.observe(make_record())
    metrics.observe(make_record(status=529, outcome=Outcome.UPSTREAM_ERROR))
    parsed = samples(metrics)
    labels = (("model", "claude-sonnet-4-5"), ("provider", "claude"),
              ("route", "POST /v1/messages"))
    assert parsed[("cliproxy_requests_total", labels + (("status", "200"),))] == 1
    assert parsed[("cliproxy_requests_total", labels + (("status", "529"),))] == 1


def test_observe_counts_tokens_by_kind():
    metrics = Metrics()
    metrics.observe(make_record())
    metrics.observe(make_record())
    parsed = samples(metrics)
    expected = {"input": 20, "output": 40, "cache_read": 60, "cache_write": 10, "reasoning": 8}
    for kind, value in expected.items():
        assert parsed[("cliproxy_tokens_total", (("kind", kind),))] == value, kind


def test_unknown_usage_adds_no_tokens():
    metrics = Metrics()
    metrics.observe(make_record(usage=None))
    assert not [key for key in samples(metrics) if key[0] == "cliproxy_tokens_total"]


def test_observe_counts_failovers():
    metrics = Metrics()
    metrics.observe(make_record())
    metrics.observe(make_record(attempts=[Attempt("alice.json", 200)]))
    assert samples(metrics)[("cliproxy_failovers_total", (("provider", "claude"),))] == 1


def test_observe_latency_histograms():
    metrics = Metrics()
    metrics.observe(make_record())
    metrics.observe(make_record(ttfb_ms=None))
    parsed = samples(metrics)
    assert parsed[("cliproxy_request_latency_seconds_count", ())] == 2
    assert parsed[("cliproxy_request_latency_seconds_sum", ())] == pytest.approx(3.0)
    assert parsed[("cliproxy_request_latency_seconds_bucket", (("le", "1.0"),))] == 0
    assert parsed[("cliproxy_request_latency_seconds_bucket", (("le", "2.5"),))] == 2
    assert parsed[("cliproxy_ttfb_seconds_count", ())] == 1


def test_open_streams_gauge():
    metrics = Metrics()
    metrics.open_streams.inc()
    metrics.open_streams.inc()
    metrics.open_streams.dec()
    assert samples(metrics)[("cliproxy_open_streams", ())] == 1


def test_account_states_one_hot():
    metrics = Metrics()
    metrics.set_account_states([("alice.json", "claude", "cooling", 42.0),
                                ("bob.json", "codex", "ready", None)])
    parsed = samples(metrics)
    for state, value in (("ready", 0), ("cooling", 1), ("error", 0), ("disabled", 0)):
        key = ("cliproxy_account_state",
               (("account", "alice.json"), ("provider", "claude"), ("state", state)))
        assert parsed[key] == value, state
    assert parsed[("cliproxy_account_cooldown_seconds", (("account", "alice.json"),))] == 42
    assert parsed[("cliproxy_account_cooldown_seconds", (("account", "bob.json"),))] == 0


def test_account_states_replace_previous():
    metrics = Metrics()
    metrics.set_account_states([("alice.json", "claude", "ready", None)])
    metrics.set_account_states([("bob.json", "codex", "disabled", None)])
    accounts = {dict(labels).get("account") for name, labels in samples(metrics)
                if name == "cliproxy_account_state"}
    assert accounts == {"bob.json"}


def test_account_state_invalid_raises():
    with pytest.raises(ValueError):
        Metrics().set_account_states([("alice.json", "claude", "sleeping", None)])


def test_model_label_values_bounded():
    metrics = Metrics(max_label_values=2)
    for model in ("m1", "m2", "m3", "m4"):
        metrics.observe(make_record(requested_model=model))
    models = {dict(labels)["model"] for name, labels in samples(metrics)
              if name == "cliproxy_requests_total"}
    assert models == {"m1", "m2", "other"}


def count_label_calls(monkeypatch, metric) -> list[dict]:
    """Record every `labels` call on `metric` while still returning the real child."""
    calls = []
    original = metric.labels

    def labels(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(metric, "labels", labels)
    return calls


def test_observe_reuses_labelled_children(monkeypatch):
    metrics = Metrics()
    request_calls = count_label_calls(monkeypatch, metrics.requests)
    token_calls = count_label_calls(monkeypatch, metrics.tokens)
    failover_calls = count_label_calls(monkeypatch, metrics.failovers)
    for _ in range(3):
        metrics.observe(make_record())

    assert len(request_calls) == 1
    assert len(token_calls) == 5
    assert len(failover_calls) == 1
    parsed = samples(metrics)
    labels = (("model", "claude-sonnet-4-5"), ("provider", "claude"),
              ("route", "POST /v1/messages"), ("status", "200"))
    assert parsed[("cliproxy_requests_total", labels)] == 3
    assert parsed[("cliproxy_tokens_total", (("kind", "input"),))] == 30
    assert parsed[("cliproxy_failovers_total", (("provider", "claude"),))] == 3


def test_label_cache_bounded(monkeypatch):
    monkeypatch.setattr(metrics_module, "MAX_CACHED_CHILDREN", 4)
    metrics = Metrics()
    for status in range(200, 220):
        metrics.observe(make_record(status=status))
        assert len(metrics._request_children) <= 4
    for status in range(200, 220):
        metrics.observe(make_record(status=status))
    parsed = samples(metrics)
    for status in range(200, 220):
        labels = (("model", "claude-sonnet-4-5"), ("provider", "claude"),
                  ("route", "POST /v1/messages"), ("status", str(status)))
        assert parsed[("cliproxy_requests_total", labels)] == 2, status


def test_other_label_values_not_cached():
    metrics = Metrics(max_label_values=1)
    for index in range(50):
        metrics.observe(make_record(requested_model=f"model-{index}"))
    assert len(metrics._request_children) == 1
    models = {dict(labels)["model"]: value for (name, labels), value in samples(metrics).items()
              if name == "cliproxy_requests_total"}
    assert models == {"model-0": 1, "other": 49}
