"""Prometheus metrics of the proxy, on a private registry.

Metric names carry the `cliproxy_` prefix:
- `cliproxy_requests_total{route,provider,model,status}`
- `cliproxy_tokens_total{kind}` with kind input, output, cache_read, cache_write, reasoning
- `cliproxy_failovers_total{provider}`: upstream attempts after the first of a request
- `cliproxy_request_latency_seconds` and `cliproxy_ttfb_seconds` histograms
- `cliproxy_open_streams`
- `cliproxy_account_state{account,provider,state}`: 1 for the account's current state,
  0 for the others, with state ready, cooling, error or disabled
- `cliproxy_account_cooldown_seconds{account}`

`route` and `model` come from client requests, so each keeps at most
`max_label_values` distinct values and reports the rest as "other".

`observe` runs once per request. It keeps the labelled counters it used in bounded caches,
so a request with known labels costs dictionary lookups instead of label resolution.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from store.records import RequestRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
NAMESPACE = "cliproxy"
DEFAULT_MAX_LABEL_VALUES = 200
OTHER_LABEL_VALUE = "other"
# Maximum labelled counters each cache of `Metrics.observe` keeps. A full cache is emptied
# and fills again with the label sets in use.
MAX_CACHED_CHILDREN = 4096

# Responses of coding models take from under a second to several minutes.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)


class AccountState(StrEnum):
    READY = "ready"
    COOLING = "cooling"
    ERROR = "error"
    DISABLED = "disabled"


class _BoundedLabel:
    """Label value filter: the first `limit` distinct values pass, later ones become "other"."""

    def __init__(self, limit: int):
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER_LABEL_VALUE


class Metrics:
    """The proxy's counters, histograms and gauges, rendered in the text exposition format."""

    def __init__(self, max_label_values: int = DEFAULT_MAX_LABEL_VALUES):
        self.registry = CollectorRegistry(auto_describe=True)
        self._route_label = _BoundedLabel(max_label_values)
        self._model_label = _BoundedLabel(max_label_values)
        self._account_lock = threading.Lock()

        self.requests = Counter(
            "requests",
            "Client requests by route, provider, model and final HTTP status (0: none sent).",
            ["route", "provider", "model", "status"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.tokens = Counter(
            "tokens",
            "Tokens reported by upstreams, by kind.",
            ["kind"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.failovers = Counter(
            "failovers",
            "Upstream attempts after the first attempt of a request.",
            ["provider"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "request_latency_seconds",
            "Time from request arrival to the last response byte.",
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttfb = Histogram(
            "ttfb_seconds",
            "Time from request arrival to the first response byte.",
            namespace=NAMESPACE,
            buckets=TTFB_BUCKETS,
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "open_streams",
            "Streamed responses in progress.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.account_state = Gauge(
            "account_state",
            "1 for the current state of each account, 0 for its other states.",
            ["account", "provider", "state"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.account_cooldown = Gauge(
            "account_cooldown_seconds",
            "Seconds until a cooling account is tried again (0 when not cooling).",
            ["account"],
            namespace=NAMESPACE,
            registry=self.registry,
        )

        # Keyed by the record's raw values. Only label sets that passed the bounded labels
        # unchanged are cached, so values reported as "other" cannot fill the cache.
        self._request_children: dict[tuple[str, str, str, int], Any] = {}
        self._failover_children: dict[str, Any] = {}
        # Created on first use, so a kind shows in the exposition once it was counted.
        self._token_children: dict[str, Any] = {}

    def observe(self, record: RequestRecord) -> None:
        """Count a finished request: status, tokens, failovers, latency and time to first byte."""
        self._requests_child(record).inc()

        usage = record.usage
        if usage is not None:
            token_children = self._token_children
            for kind, count in (
                ("input", usage.input),
                ("output", usage.output),
                ("cache_read", usage.cache_read),
                ("cache_write", usage.cache_write),
                ("reasoning", usage.reasoning),
            ):
                if count:
                    child = token_children.get(kind)
                    if child is None:
                        child = token_children[kind] = self.tokens.labels(kind=kind)
                    child.inc(count)

        if len(record.attempts) > 1:
            self._failovers_child(record.provider).inc(len(record.attempts) - 1)
        self.request_latency.observe(record.latency_ms / 1000)
        if record.ttfb_ms is not None:
            self.ttfb.observe(record.ttfb_ms / 1000)

    def _requests_child(self, record: RequestRecord) -> Any:
        model = record.model
        key = (record.route, record.provider, model, record.status)
        child = self._request_children.get(key)
        if child is not None:
            return child
        route_label = self._route_label(record.route)
        model_label = self._model_label(model)
        child = self.requests.labels(
            route=route_label, provider=record.provider, model=model_label, status=str(record.status)
        )
        if route_label == record.route and model_label == model:
            _cache_child(self._request_children, key, child)
        return child

    def _failovers_child(self, provider: str) -> Any:
        child = self._failover_children.get(provider)
        if child is None:
            child = self.failovers.labels(provider=provider)
            _cache_child(self._failover_children, provider, child)
        return child

    def set_account_states(
        self, states: Iterable[tuple[str, str, AccountState | str, float | None]]
    ) -> None:
        """Replace the account gauges with (account, provider, state, cooldown seconds) rows.

        Accounts missing from `states` disappear from the output. Raises ValueError for a
        state that is not one of ready, cooling, error, disabled.
        """
        rows = [
            (account, provider, AccountState(state), cooldown or 0.0)
            for account, provider, state, cooldown in states
        ]
        with self._account_lock:
            self.account_state.clear()
            self.account_cooldown.clear()
            for account, provider, state, cooldown in rows:
                for candidate in AccountState:
                    self.account_state.labels(
                        account=account, provider=provider, state=candidate.value
                    ).set(1 if candidate is state else 0)
                self.account_cooldown.labels(account=account).set(max(0.0, cooldown))

    def render(self) -> bytes:
        """Return every metric in the Prometheus text exposition format (`CONTENT_TYPE`)."""
        with self._account_lock:
            return generate_latest(self.registry)


def _cache_child(cache: dict[Any, Any], key: Any, child: Any) -> None:
    # Two threads may insert at once. Both insert the same child, and the size check may
    # let the cache pass its bound by a few entries, which is harmless.
    if len(cache) >= MAX_CACHED_CHILDREN:
        cache.clear()
    cache[key] = child
