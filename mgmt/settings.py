"""Scalar settings, routing strategy, `GET /config` and the raw `config.yaml` routes.

Setters take `{"value": ...}` and return `{"status": "ok"}`. Getters return a one-key object
named like the setting (`{"request-retry": 3}`). PATCH is an alias of PUT, as in CLIProxyAPI.
Every change is written to config.yaml (comments kept) and applied live.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from config import Config, ConfigError
from config.defaults import ROUTING_STRATEGIES
from mgmt.context import MgmtContext
from mgmt.router import HttpError, MgmtRequest, MgmtResponse, Router, ok

logger = logging.getLogger(__name__)

# Largest config.yaml accepted by `PUT /config.yaml`.
MAX_CONFIG_BYTES = 1024 * 1024

# Keys `GET /config` leaves out, as CLIProxyAPI does: listen address, paths and the
# management secret are not exposed.
HIDDEN_CONFIG_KEYS = ("host", "port", "auth-dir", "remote-management")


@dataclass(frozen=True)
class ScalarSetting:
    """One scalar config key exposed as `GET/PUT/PATCH <route>`."""

    route: str
    key_path: tuple[str, ...]
    kind: type
    read: Callable[[Config], Any]
    # Maps a valid request value to what is stored (e.g. clamps a negative count).
    normalise: Callable[[Any], Any] = lambda value: value
    # DELETE resets the key to this value when set (only `proxy-url` has DELETE).
    cleared_value: Any = None

    @property
    def response_key(self) -> str:
        return self.key_path[-1]


SCALAR_SETTINGS: tuple[ScalarSetting, ...] = (
    ScalarSetting("/debug", ("debug",), bool, lambda c: c.debug),
    ScalarSetting("/logging-to-file", ("logging-to-file",), bool, lambda c: c.logging_to_file),
    ScalarSetting("/request-log", ("request-log",), bool, lambda c: c.request_log),
    ScalarSetting(
        "/usage-statistics-enabled",
        ("usage-statistics-enabled",),
        bool,
        lambda c: c.usage_statistics_enabled,
    ),
    ScalarSetting("/request-retry", ("request-retry",), int, lambda c: c.request_retry),
    ScalarSetting(
        "/max-retry-interval", ("max-retry-interval",), int, lambda c: c.max_retry_interval
    ),
    ScalarSetting(
        "/logs-max-total-size-mb",
        ("logs-max-total-size-mb",),
        int,
        lambda c: c.logs_max_total_size_mb,
        normalise=lambda value: max(value, 0),
    ),
    ScalarSetting(
        "/error-logs-max-files",
        ("error-logs-max-files",),
        int,
        lambda c: c.error_logs_max_files,
        normalise=lambda value: value if value >= 0 else 10,
    ),
    ScalarSetting(
        "/quota-exceeded/switch-project",
        ("quota-exceeded", "switch-project"),
        bool,
        lambda c: c.switch_project,
    ),
    ScalarSetting(
        "/quota-exceeded/switch-preview-model",
        ("quota-exceeded", "switch-preview-model"),
        bool,
        lambda c: c.switch_preview_model,
    ),
    ScalarSetting(
        "/proxy-url",
        ("proxy-url",),
        str,
        lambda c: c.proxy_url,
        normalise=lambda value: value.strip().rstrip("/"),
        cleared_value="",
    ),
)


def set_config_value(document: Any, key_path: Sequence[str], value: Any) -> None:
    """Set `key_path` in a round-trip YAML document, creating missing parent mappings."""
    node = document
    for key in key_path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = CommentedMap()
            node[key] = child
        node = child
    node[key_path[-1]] = value


def save_config(ctx: MgmtContext, mutate: Callable[[Any], None]) -> Config:
    """Write a config edit and apply it, mapping failures to CLIProxyAPI's error responses."""
    try:
        return ctx.config.edit(mutate)
    except ConfigError as exc:
        raise HttpError(400, str(exc)) from None
    except OSError as exc:
        logger.error("saving config %s failed: %s", ctx.config.file.path, exc)
        raise HttpError(500, f"failed to save config: {exc}") from None


def require_value(request: MgmtRequest, kind: type) -> Any:
    """Return `value` from a `{"value": ...}` body, checking its JSON type exactly."""
    body = request.json_object()
    if "value" not in body:
        raise HttpError(400, "invalid body")
    value = body["value"]
    # bool is a subclass of int in Python, but JSON true is not a number.
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise HttpError(400, "invalid body")
    if not isinstance(value, kind):
        raise HttpError(400, "invalid body")
    return value


def _scalar_handlers(
    ctx: MgmtContext, setting: ScalarSetting
) -> tuple[Callable[[MgmtRequest], MgmtResponse], ...]:
    def get(_request: MgmtRequest) -> MgmtResponse:
        return MgmtResponse(200, {setting.response_key: setting.read(ctx.config.current())})

    def put(request: MgmtRequest) -> MgmtResponse:
        value = setting.normalise(require_value(request, setting.kind))
        save_config(ctx, lambda doc: set_config_value(doc, setting.key_path, value))
        logger.info("management API: set %s", ".".join(setting.key_path))
        return ok()

    def delete(_request: MgmtRequest) -> MgmtResponse:
        save_config(ctx, lambda doc: set_config_value(doc, setting.key_path, setting.cleared_value))
        logger.info("management API: cleared %s", ".".join(setting.key_path))
        return ok()

    return get, put, delete


def normalise_strategy(raw: Any) -> str:
    """Return the canonical routing strategy for `raw`, raising 400 for unknown names."""
    if not isinstance(raw, str):
        raise HttpError(400, "invalid strategy")
    strategy = ROUTING_STRATEGIES.get(raw.strip().lower())
    if strategy is None:
        raise HttpError(400, "invalid strategy")
    return strategy


def _routing_handlers(ctx: MgmtContext) -> tuple[Callable[[MgmtRequest], MgmtResponse], ...]:
    def get(_request: MgmtRequest) -> MgmtResponse:
        return MgmtResponse(200, {"strategy": ctx.config.current().routing_strategy})

    def put(request: MgmtRequest) -> MgmtResponse:
        body = request.json_object()
        # `/routing/strategy` takes {"value"}; the legacy `/routing` takes {"strategy"}.
        raw = body.get("value", body.get("strategy"))
        strategy = normalise_strategy(raw)
        save_config(ctx, lambda doc: set_config_value(doc, ("routing", "strategy"), strategy))
        logger.info("management API: routing strategy set to %s", strategy)
        return ok()

    return get, put


def config_json(config: Config) -> dict[str, Any]:
    """Return the config as JSON for `GET /config`: file keys plus effective typed values.

    Keys missing from the file appear with their defaults, so a client reading
    `request-retry` always gets an int. `routing-strategy` is a flat copy of
    `routing.strategy` that Quotio reads.
    """
    plain = json.loads(json.dumps(config.data or {}, default=str))
    for key in HIDDEN_CONFIG_KEYS:
        plain.pop(key, None)
    for setting in SCALAR_SETTINGS:
        if len(setting.key_path) == 1:
            plain[setting.key_path[0]] = setting.read(config)
    quota = plain.get("quota-exceeded")
    if not isinstance(quota, dict):
        quota = plain["quota-exceeded"] = {}
    quota["switch-project"] = config.switch_project
    quota["switch-preview-model"] = config.switch_preview_model
    routing = plain.get("routing")
    if not isinstance(routing, dict):
        routing = plain["routing"] = {}
    routing["strategy"] = config.routing_strategy
    plain["routing-strategy"] = config.routing_strategy
    plain["api-keys"] = list(config.api_keys)
    return plain


def _config_yaml_handlers(ctx: MgmtContext) -> tuple[Callable[[MgmtRequest], MgmtResponse], ...]:
    def get(_request: MgmtRequest) -> MgmtResponse:
        try:
            data = ctx.config.file.path.read_bytes()
        except FileNotFoundError:
            raise HttpError(404, "not_found", message="config file not found") from None
        except OSError as exc:
            raise HttpError(500, "read_failed", message=str(exc)) from None
        return MgmtResponse(
            200, body=data, headers={"Content-Type": "application/yaml; charset=utf-8"}
        )

    def put(request: MgmtRequest) -> MgmtResponse:
        if len(request.body) > MAX_CONFIG_BYTES:
            raise HttpError(400, "invalid_yaml", message="config file is larger than 1 MiB")
        try:
            text = request.body.decode("utf-8")
            YAML(typ="safe", pure=True).load(text)
        except (UnicodeDecodeError, YAMLError) as exc:
            raise HttpError(400, "invalid_yaml", message=str(exc)) from None
        try:
            ctx.config.replace_text(text)
        except ConfigError as exc:
            raise HttpError(422, "invalid_config", message=str(exc)) from None
        except OSError as exc:
            logger.error("writing config %s failed: %s", ctx.config.file.path, exc)
            raise HttpError(500, "write_failed", message=str(exc)) from None
        logger.info("management API: config.yaml replaced")
        return MgmtResponse(200, {"ok": True, "changed": ["config"]})

    return get, put


def register(router: Router, ctx: MgmtContext) -> None:
    """Add the settings routes to `router`."""
    for setting in SCALAR_SETTINGS:
        get, put, delete = _scalar_handlers(ctx, setting)
        router.add("GET", setting.route, get)
        router.add(("PUT", "PATCH"), setting.route, put)
        if setting.cleared_value is not None:
            router.add("DELETE", setting.route, delete)

    get, put = _routing_handlers(ctx)
    for route in ("/routing/strategy", "/routing"):
        router.add("GET", route, get)
        router.add(("PUT", "PATCH"), route, put)

    router.add(
        "GET", "/config", lambda _request: MgmtResponse(200, config_json(ctx.config.current()))
    )
    get, put = _config_yaml_handlers(ctx)
    router.add("GET", "/config.yaml", get)
    router.add("PUT", "/config.yaml", put)
