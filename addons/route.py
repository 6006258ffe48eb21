"""The router: model → provider → account, then destination and credentials.

For each gated request the router reads the model (JSON body, or the Gemini path segment),
requests from the pool an account whose upstream speaks the client's format, and rewrites the
request to that account's upstream with its credentials (`providers.upstreams`). Model lists
are served locally. The same `choose_account()` serves the failover addon when an attempt
fails, so waiting for a cooling account and the `request-retry` rounds live in one place.
"""

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import http

from addons.flowstate import FlowState, client_gone, flow_state
from addons.local import error_response, json_response
from addons.runtime import Runtime
from pool import AllCooling, Exhausted, NotServed, Picked, UpstreamKind
from pool.cooldown import Failure
from providers.catalog import CATALOG
from providers.dialects import Dialect, Operation
from providers.modellist import anthropic_models, gemini_model, gemini_models, openai_models
from providers.upstreams import KINDS_FOR_DIALECT, ROUTES_FOR_KIND, UnsupportedOperation, prepare_upstream

logger = logging.getLogger(__name__)

MAX_JITTER_SECONDS = 2.0


@dataclass(frozen=True)
class NoAccount:
    """No account can take the request; `response` gives the reason in the client's dialect."""

    response: http.Response


class Router:
    """Routes each gated request to an account's upstream."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def request(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if state is None or state.local or flow.response is not None:
            return
        response = await self.route(flow, state)
        if response is not None:
            state.local = True
            flow.response = response

    async def route(self, flow: http.HTTPFlow, state: FlowState) -> http.Response | None:
        """Route the request; return a local response when it cannot go upstream."""
        route = state.route
        if route is None:
            return error_response(
                state.dialect,
                404,
                f"cliproxy does not serve {flow.request.method} {flow.request.path.split('?')[0]}",
                code="not_found",
            )
        if route.operation in (Operation.LIST_MODELS, Operation.GET_MODEL):
            return self.list_models(flow, state)

        problem = self.read_body(flow, state)
        if problem is not None:
            return problem

        choice = await choose_account(self.runtime, state, None, client_gone(flow))
        if isinstance(choice, NoAccount):
            return choice.response
        return apply_choice(flow, state, choice)

    def read_body(self, flow: http.HTTPFlow, state: FlowState) -> http.Response | None:
        """Parse the JSON body (decoding gzip or zstd) for the model and the stream flag."""
        route = state.route
        assert route is not None
        try:
            content = flow.request.get_content(strict=True) or b""
        except ValueError as error:
            return error_response(state.dialect, 400, f"request body cannot be decoded: {error}")

        body = None
        if content:
            try:
                body = json.loads(content)
            except ValueError as error:
                return error_response(state.dialect, 400, f"request body is not valid JSON: {error}")
            if not isinstance(body, dict):
                return error_response(state.dialect, 400, "request body must be a JSON object")
        state.body = body
        state.original_headers = flow.request.headers.fields
        state.original_content = flow.request.raw_content
        state.original_path = flow.request.path

        if route.path_model is not None:
            state.requested_model = route.path_model
            state.stream = route.gemini_method == "streamGenerateContent"
        else:
            model = (body or {}).get("model")
            if not isinstance(model, str) or not model.strip():
                return error_response(
                    state.dialect, 400, "request body has no 'model'; name the model to use",
                    param="model",
                )
            state.requested_model = model.strip()
            state.stream = (body or {}).get("stream") is True
        return None

    def list_models(self, flow: http.HTTPFlow, state: FlowState) -> http.Response:
        route = state.route
        assert route is not None
        pool = self.runtime.pool

        # `/v1/models` is both OpenAI's list and the Gemini API's (google-genai uses API v1);
        # the header that carried the key distinguishes the clients.
        gemini_client = state.key_source in ("x-goog-api-key", "query")
        if route.api_version == "v1":
            use_gemini = gemini_client and "anthropic-version" not in flow.request.headers
        else:
            use_gemini = route.dialect is Dialect.GEMINI

        if use_gemini:
            models = pool.served_models(CATALOG, KINDS_FOR_DIALECT[Dialect.GEMINI])
            if route.operation is Operation.GET_MODEL:
                wanted = route.path_model
                if any(model == wanted for model, _ in models):
                    return json_response(200, gemini_model(wanted or ""))
                return error_response(state.dialect, 404, f"model {wanted} is not served by cliproxy")
            return json_response(200, gemini_models(models))

        anthropic_client = "anthropic-version" in flow.request.headers
        shape = anthropic_models if anthropic_client else openai_models
        models = pool.served_models(CATALOG)
        if route.operation is Operation.GET_MODEL:
            wanted = route.path_model
            for model, account in models:
                if model == wanted:
                    return json_response(200, shape([(model, account)])["data"][0])
            dialect = Dialect.ANTHROPIC if anthropic_client else Dialect.OPENAI_CHAT
            return error_response(dialect, 404, f"model {wanted} is not served by cliproxy", code="model_not_found")
        return json_response(200, shape(models))


async def choose_account(
    runtime: Runtime,
    state: FlowState,
    last_failure: Failure | None,
    client_gone: Callable[[], bool] = lambda: False,
) -> Picked | NoAccount:
    """Pick the account for the next attempt, waiting for a cooling one when allowed.

    A new round over the pool (forgetting which accounts were tried) starts only after
    403/408/429/5xx failures, at most `request-retry` times, and only when an account recovers
    within `max-retry-interval` seconds; otherwise the request ends with a 429 or the last error.
    """
    config = runtime.cfg
    pool = runtime.pool
    route = state.route
    assert route is not None
    kinds = KINDS_FOR_DIALECT[route.dialect]
    model = state.requested_model

    while True:
        result = pool.pick(kinds, model, exclude=state.tried)
        if isinstance(result, Picked):
            if await runtime.tokens.ensure_fresh(result.account):
                return result
            state.tried.add(result.account.id)
            continue
        if isinstance(result, NotServed):
            return NoAccount(not_served_response(runtime, state, kinds))

        may_wait = state.rounds < config.request_retry and (
            last_failure is None or last_failure.retry_round_eligible
        )
        wait = pool.earliest_recovery(kinds, model)
        if not may_wait or wait is None or wait > config.max_retry_interval:
            return NoAccount(exhausted_response(state, result, wait, last_failure))

        delay = wait + min(wait * 0.25, MAX_JITTER_SECONDS) * random.random() if wait > 0 else 0.0
        delay = min(delay, float(config.max_retry_interval))
        logger.info(
            "request %s: every account for %s is busy; waiting %.1fs for round %d",
            state.request_id, model, delay, state.rounds + 1,
        )
        await asyncio.sleep(delay)
        if client_gone():
            # Retrying for a client that hung up would spend quota on a response that no client reads.
            logger.info("request %s: client disconnected while waiting; not retrying", state.request_id)
            state.outcome = "client_disconnected"
            return NoAccount(error_response(state.dialect, 499, "client disconnected"))
        state.rounds += 1
        state.tried.clear()


def apply_choice(flow: http.HTTPFlow, state: FlowState, choice: Picked) -> http.Response | None:
    """Point the request at the chosen account; restore the client's original request first."""
    route = state.route
    assert route is not None
    account = choice.account

    if state.original_headers is not None and state.account is not None:
        flow.request.headers.fields = state.original_headers
        flow.request.path = state.original_path
        flow.request.raw_content = state.original_content

    body = json.loads(json.dumps(state.body)) if state.body is not None and state.account else state.body
    try:
        state.collect_stream = prepare_upstream(
            flow.request, account, route, choice.upstream_model, body, state.requested_model
        )
    except UnsupportedOperation as error:
        return error_response(state.dialect, 400, f"{error} (account {account.label})")

    state.account = account
    state.upstream_model = choice.upstream_model
    state.tried.add(account.id)
    logger.debug("request %s: %s -> %s (%s)", state.request_id, state.requested_model, account.label, account.kind)
    return None


def not_served_response(runtime: Runtime, state: FlowState, kinds: frozenset[UpstreamKind]) -> http.Response:
    """Explain why no account serves the model on this route."""
    model = state.requested_model
    pool = runtime.pool
    route = state.route
    assert route is not None

    other_kinds = set(UpstreamKind) - set(kinds)
    others = pool.serving(other_kinds, model)
    if others:
        routes = sorted({route for account, _ in others for route in ROUTES_FOR_KIND[account.kind].split(" or ")})
        return error_response(
            state.dialect,
            400,
            f"model {model} is served by {others[0][0].provider} accounts, which this route "
            f"({route.name}) cannot reach; send it to {' or '.join(routes)} instead "
            "(format translation between APIs is not available yet)",
            code="model_route_mismatch",
            param="model",
        )

    served = sorted(name for name, _ in pool.served_models(CATALOG, kinds))
    listing = ", ".join(served[:40]) if served else "none"
    return error_response(
        state.dialect,
        404,
        f"model {model} is not served by any account on this route; served models: {listing}",
        code="model_not_found",
        param="model",
    )


def exhausted_response(
    state: FlowState, result: object, wait: float | None, last_failure: Failure | None
) -> http.Response:
    """Build the response for a request no account is left for: 429 while accounts cool down, else 502/503."""
    model = state.requested_model
    if wait is not None and wait > 0 and (
        isinstance(result, AllCooling) or last_failure is None or last_failure.retry_round_eligible
    ):
        reason = ""
        if isinstance(result, AllCooling):
            reason = result.reason
        elif last_failure is not None:
            reason = last_failure.reason
        return error_response(
            state.dialect,
            429,
            f"all accounts for model {model} are cooling down; the first recovers in "
            f"{int(wait + 0.999)}s" + (f" (last: {reason})" if reason else ""),
            code="model_cooldown",
            retry_after=wait,
        )
    message = f"no account could serve model {model}"
    if last_failure is not None:
        message += f"; last failure: {last_failure.reason}"
    return error_response(state.dialect, 503 if isinstance(result, Exhausted) else 502, message, code="upstream_unavailable")
