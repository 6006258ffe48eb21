"""Failure scripting for the fake upstream: behaviors, their composition, and per-account queues.

A behavior changes how the response to one request is produced. `up.enqueue("A", b1, b2)` makes the next
request to account A use b1 and the one after it b2. `up.set_default("A", b)` applies b
to every later request once the queue is empty. Combine behaviors with `+`, for example
`Slow(0.05) + Gzip()`. An enqueued list or tuple is combined in the same way.

Error behaviors (`Status`, and `ApiError` from the helpers `rate_limited()`,
`server_error()` and so on) replace the response. `ApiError` picks its body shape from the
route that was called (Anthropic, OpenAI, Codex, Gemini or Code Assist) when the request
comes in. The other behaviors shape a success response and combine with each other.

Only requests that match an API route consume behaviors. HEAD requests, unknown paths and
the `/_fake/` control paths do not.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_EVENTS = 3
"""Number of text deltas in a success stream unless `Slow(events=...)` changes it."""

RATE_LIMIT_HINTS = (
    "retry-after-seconds",
    "retry-after-date",
    "anthropic-unified",
    "codex-resets-in",
    "codex-resets-at",
    "google-retry-info",
    "none",
)


@dataclass(frozen=True, slots=True)
class Plan:
    """Settings that the behaviors chose for one response. The default is a plain success."""

    error: Status | ApiError | None = None
    header_delay: float = 0.0
    event_delay: float = 0.0
    events: int = DEFAULT_EVENTS
    drop_after: int | None = None
    gzip: bool = False
    crlf: bool = False
    split_utf8: bool = False
    no_usage: bool = False
    stream_error: StreamError | None = None
    omit: frozenset[str] = frozenset()


DEFAULT_PLAN = Plan()


class Behavior:
    """Base class of all behaviors. `a + b` applies a, then b."""

    def apply(self, plan: Plan) -> Plan:
        raise NotImplementedError

    def __add__(self, other: Behavior) -> Combined:
        return Combined((self, other))


@dataclass(frozen=True)
class Combined(Behavior):
    """Several behaviors applied to the same response, in order."""

    parts: tuple[Behavior, ...]

    def apply(self, plan: Plan) -> Plan:
        for part in self.parts:
            plan = part.apply(plan)
        return plan


@dataclass(frozen=True)
class Status(Behavior):
    """Respond with exactly this status, body and headers. A dict body is sent as JSON."""

    code: int
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, error=self)


@dataclass(frozen=True)
class ApiError(Behavior):
    """An error response whose body follows the dialect of the route that is called.

    `kind` is one of the keys of `tests.fakes.errors.ERROR_KINDS`. `hint` and `seconds`
    only matter for rate limits: see `rate_limited()`.
    """

    kind: str
    code: int
    hint: str = "none"
    seconds: float = 30.0
    message: str | None = None

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, error=self)


@dataclass(frozen=True)
class Slow(Behavior):
    """Wait `event_delay` seconds between stream frames, or before a JSON body.

    `events` sets how many text deltas a success stream has.
    """

    event_delay: float = 0.0
    events: int = DEFAULT_EVENTS

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, event_delay=self.event_delay, events=self.events)


@dataclass(frozen=True)
class Delay(Behavior):
    """Wait `seconds` before sending the response headers."""

    seconds: float

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, header_delay=self.seconds)


@dataclass(frozen=True)
class DropAfter(Behavior):
    """Write `events` stream frames, then close the socket without the final empty chunk.

    A JSON response sends its headers and half of the body before the close.
    """

    events: int = 1

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, drop_after=self.events)


@dataclass(frozen=True)
class Gzip(Behavior):
    """Gzip the response body. A stream is compressed with a sync flush after each frame."""

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, gzip=True)


@dataclass(frozen=True)
class CRLF(Behavior):
    """End SSE lines with CRLF. Gemini API SSE streams use CRLF even without this behavior."""

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, crlf=True)


@dataclass(frozen=True)
class SplitUtf8(Behavior):
    """Put multi-byte characters in the text deltas, and write each such frame in two parts.

    The split falls inside a multi-byte character. Anthropic and Responses streams also get
    `: keep-alive` comment frames, so a test can check that a relay is byte-exact.
    """

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, split_utf8=True)


@dataclass(frozen=True)
class NoUsage(Behavior):
    """Leave out every usage field, in streams and in JSON responses."""

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, no_usage=True)


@dataclass(frozen=True)
class Omit(Behavior):
    """Leave out the stream frames with these names, e.g. "message_stop" or "response.completed".

    Frames without an SSE event name are labelled "chunk", "usage" and "done" (`[DONE]`)
    in OpenAI Chat and legacy completions streams, and "chunk" and "final" in Gemini streams.
    """

    events: frozenset[str]

    def __init__(self, *events: str) -> None:
        object.__setattr__(self, "events", frozenset(events))

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, omit=plan.omit | self.events)


@dataclass(frozen=True)
class StreamError(Behavior):
    """Write `after` frames of a success stream, then an in-band error event, then end the stream.

    The error event follows the route: Anthropic `event: error`, OpenAI Chat
    `data: {"error": ...}` without `[DONE]`, Responses `event: response.failed`, and Gemini
    `data: {"error": ...}`.
    """

    after: int = 2
    error: ApiError = field(default_factory=lambda: server_error(529))

    def apply(self, plan: Plan) -> Plan:
        return replace(plan, stream_error=self)


def rate_limited(hint: str = "retry-after-seconds", seconds: float = 30.0) -> ApiError:
    """Return a 429 with the kind of retry hint that `hint` names.

    - "retry-after-seconds": header `Retry-After: <seconds>`.
    - "retry-after-date": header `Retry-After: <HTTP date now + seconds>`.
    - "anthropic-unified": headers `anthropic-ratelimit-unified-status: rejected`,
      `anthropic-ratelimit-unified-5h-status: rejected` and the `-5h-reset` and `-reset`
      unix times, with an Anthropic body.
    - "codex-resets-in" / "codex-resets-at": body `{"error": {"type": "usage_limit_reached",
      "resets_in_seconds": N}}`, or `"resets_at": <unix>`.
    - "google-retry-info": Gemini body with status RESOURCE_EXHAUSTED and a
      google.rpc.RetryInfo detail whose retryDelay is "<seconds>s".
    - "none": the route's own 429 body, without a hint.
    """
    if hint not in RATE_LIMIT_HINTS:
        raise ValueError(f"unknown rate-limit hint {hint!r}; expected one of {', '.join(RATE_LIMIT_HINTS)}")
    return ApiError("rate_limited", 429, hint=hint, seconds=seconds)


def server_error(code: int = 503) -> ApiError:
    """Return a 5xx. 503 and 529 read as "overloaded", other codes as an internal error."""
    return ApiError("overloaded" if code in (503, 529) else "server_error", code)


def unauthorized() -> ApiError:
    return ApiError("unauthorized", 401)


def forbidden() -> ApiError:
    return ApiError("forbidden", 403)


def payment_required() -> ApiError:
    return ApiError("payment_required", 402)


def model_not_found() -> ApiError:
    """Return a 404 whose message names the requested model."""
    return ApiError("model_not_found", 404)


def invalid_request() -> ApiError:
    return ApiError("invalid_request", 400)


_SPEC_FACTORIES: dict[str, Any] = {
    "status": lambda spec: Status(int(spec["code"]), spec.get("body"), dict(spec.get("headers") or {})),
    "rate_limited": lambda spec: rate_limited(spec.get("hint", "retry-after-seconds"), float(spec.get("seconds", 30))),
    "server_error": lambda spec: server_error(int(spec.get("code", 503))),
    "unauthorized": lambda spec: unauthorized(),
    "forbidden": lambda spec: forbidden(),
    "payment_required": lambda spec: payment_required(),
    "model_not_found": lambda spec: model_not_found(),
    "invalid_request": lambda spec: invalid_request(),
    "slow": lambda spec: Slow(float(spec.get("event_delay", 0)), int(spec.get("events", DEFAULT_EVENTS))),
    "delay": lambda spec: Delay(float(spec["seconds"])),
    "drop_after": lambda spec: DropAfter(int(spec.get("events", 1))),
    "gzip": lambda spec: Gzip(),
    "crlf": lambda spec: CRLF(),
    "split_utf8": lambda spec: SplitUtf8(),
    "no_usage": lambda spec: NoUsage(),
    "omit": lambda spec: Omit(*spec["events"]),
    "stream_error": lambda spec: StreamError(int(spec.get("after", 2)), server_error(int(spec.get("code", 529)))),
}


def behavior_from_spec(spec: Any) -> Behavior:
    """Build a behavior from its JSON form, as the `/_fake/` control API receives it.

    A spec is `{"kind": "rate_limited", "hint": "codex-resets-in", "seconds": 5}` (keyword
    names as in the Python helpers), or a list of specs, which are combined.
    """
    if isinstance(spec, list):
        return Combined(tuple(behavior_from_spec(item) for item in spec))
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"invalid behavior spec {spec!r}: expected an object with a 'kind' key, or a list")
    factory = _SPEC_FACTORIES.get(spec["kind"])
    if factory is None:
        raise ValueError(f"unknown behavior kind {spec['kind']!r}; expected one of {', '.join(_SPEC_FACTORIES)}")
    try:
        return factory(spec)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"invalid behavior spec {spec!r}: {exc}") from exc


def _as_behavior(item: Behavior | list[Behavior] | tuple[Behavior, ...] | None) -> Behavior | None:
    if isinstance(item, (list, tuple)):
        return Combined(tuple(item))
    if item is not None and not isinstance(item, Behavior):
        raise TypeError(f"expected a Behavior, got {type(item).__name__}")
    return item


class Scripts:
    """Per-account behavior queues and defaults. Safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Behavior]] = {}
        self._defaults: dict[str, Behavior] = {}

    def enqueue(self, account: str, *behaviors: Behavior | list[Behavior] | tuple[Behavior, ...]) -> None:
        items = [_as_behavior(item) for item in behaviors]
        with self._lock:
            queue = self._queues.setdefault(account, deque())
            queue.extend(item for item in items if item is not None)

    def set_default(self, account: str, behavior: Behavior | list[Behavior] | None) -> None:
        resolved = _as_behavior(behavior)
        with self._lock:
            if resolved is None:
                self._defaults.pop(account, None)
            else:
                self._defaults[account] = resolved

    def pending(self, account: str) -> int:
        """Return how many queued behaviors `account` has not consumed yet."""
        with self._lock:
            return len(self._queues.get(account, ()))

    def reset(self) -> None:
        with self._lock:
            self._queues.clear()
            self._defaults.clear()

    def next_plan(self, account: str) -> Plan:
        """Consume the next queued behavior of `account`, or use its default, and return the plan."""
        if not self._queues and not self._defaults:
            return DEFAULT_PLAN
        with self._lock:
            queue = self._queues.get(account)
            if queue:
                behavior: Behavior | None = queue.popleft()
                if not queue:
                    del self._queues[account]
            else:
                behavior = self._defaults.get(account)
        if behavior is None:
            return DEFAULT_PLAN
        return behavior.apply(DEFAULT_PLAN)
