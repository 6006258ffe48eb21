"""The validated configuration model and the parser that builds it from YAML data.

`parse_config()` takes the plain data of config.yaml (dicts, lists, scalars) and returns an
immutable `Config`. Every invalid value raises `ConfigError` naming the key, the value and the
fix. Unknown keys are accepted and ignored here; the file writer keeps them on disk.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.defaults import (
    DEFAULT_AUTH_DIR,
    DEFAULT_BODY_SIZE_LIMIT_MB,
    DEFAULT_HOST,
    DEFAULT_OAUTH_ENDPOINTS,
    DEFAULT_PORT,
    DEFAULT_UPSTREAM_BASE_URLS,
    ROUTING_STRATEGIES,
)
from config.errors import ConfigError


@dataclass(frozen=True)
class ModelMapping:
    """One `models:` entry: `name` is what the upstream receives, `alias` what clients send."""

    name: str
    alias: str


@dataclass(frozen=True)
class ApiKeyEntry:
    """One entry of `claude-api-key`, `codex-api-key` or `gemini-api-key`."""

    section: str
    index: int
    api_key: str
    base_url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    proxy_url: str = ""
    models: tuple[ModelMapping, ...] = ()
    excluded_models: tuple[str, ...] = ()
    priority: int = 0
    prefix: str = ""


@dataclass(frozen=True)
class CompatKey:
    """One `api-key-entries` item of an OpenAI-compatible provider."""

    api_key: str
    proxy_url: str = ""


@dataclass(frozen=True)
class CompatProvider:
    """One `openai-compatibility` entry."""

    index: int
    name: str
    base_url: str
    api_keys: tuple[CompatKey, ...]
    models: tuple[ModelMapping, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    excluded_models: tuple[str, ...] = ()
    priority: int = 0
    prefix: str = ""
    disabled: bool = False


@dataclass(frozen=True)
class RemoteManagement:
    """The `remote-management` section."""

    allow_remote: bool = False
    secret_key: str = ""


@dataclass(frozen=True)
class Config:
    """The validated configuration. `data` keeps the plain parsed YAML for `GET /config`."""

    path: Path
    data: Mapping[str, Any]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    auth_dir: Path = Path(DEFAULT_AUTH_DIR).expanduser()
    api_keys: tuple[str, ...] = ()
    routing_strategy: str = "round-robin"
    request_retry: int = 3
    max_retry_interval: int = 30
    request_log: bool = False
    usage_statistics_enabled: bool = True
    logging_to_file: bool = False
    debug: bool = False
    proxy_url: str = ""
    remote_management: RemoteManagement = RemoteManagement()
    switch_project: bool = True
    switch_preview_model: bool = True
    claude_api_keys: tuple[ApiKeyEntry, ...] = ()
    codex_api_keys: tuple[ApiKeyEntry, ...] = ()
    gemini_api_keys: tuple[ApiKeyEntry, ...] = ()
    openai_compatibility: tuple[CompatProvider, ...] = ()
    upstream_base_urls: Mapping[str, str] = field(default_factory=dict)
    oauth_endpoints: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    body_size_limit: int = DEFAULT_BODY_SIZE_LIMIT_MB * 1024 * 1024
    usage_retention_days: int = 30
    error_logs_max_files: int = 10
    logs_max_total_size_mb: int = 0

    @property
    def directory(self) -> Path:
        """The directory holding config.yaml; logs and the usage database live here."""
        return self.path.parent

    @property
    def listens_on_all_interfaces(self) -> bool:
        return self.host in ("", "0.0.0.0", "::")


def parse_config(data: Mapping[str, Any] | None, path: Path) -> Config:
    """Validate the plain YAML data of config.yaml and build a `Config`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {path} must contain a YAML mapping (key: value lines), "
            f"found {type(data).__name__}"
        )

    remote = _mapping(data, "remote-management")
    quota = _mapping(data, "quota-exceeded")
    routing = _mapping(data, "routing")

    strategy_raw = routing.get("strategy", "round-robin")
    strategy = ROUTING_STRATEGIES.get(str(strategy_raw or "").strip().lower())
    if strategy is None:
        raise ConfigError.invalid(
            "routing.strategy", strategy_raw, "use 'round-robin' or 'fill-first'"
        )

    auth_dir_raw = data.get("auth-dir") or DEFAULT_AUTH_DIR
    if not isinstance(auth_dir_raw, str):
        raise ConfigError.invalid("auth-dir", auth_dir_raw, "give a directory path as a string")
    auth_dir = Path(os.path.expanduser(auth_dir_raw))
    if not auth_dir.is_absolute():
        auth_dir = (path.parent / auth_dir).resolve()

    upstreams = dict(DEFAULT_UPSTREAM_BASE_URLS)
    for kind, url in _mapping(data, "upstream-base-url").items():
        upstreams[str(kind)] = _url(f"upstream-base-url.{kind}", url)

    oauth = {name: dict(urls) for name, urls in DEFAULT_OAUTH_ENDPOINTS.items()}
    for provider, urls in _mapping(data, "oauth-endpoints").items():
        if not isinstance(urls, Mapping):
            raise ConfigError.invalid(
                f"oauth-endpoints.{provider}", urls, "give a mapping with authorize-url and token-url"
            )
        for name, url in urls.items():
            oauth.setdefault(str(provider), {})[str(name)] = _url(
                f"oauth-endpoints.{provider}.{name}", url
            )

    return Config(
        path=path,
        data=data,
        host=_host(data.get("host", DEFAULT_HOST)),
        port=_port(data.get("port", DEFAULT_PORT)),
        auth_dir=auth_dir,
        api_keys=_api_keys(data.get("api-keys")),
        routing_strategy=strategy,
        request_retry=_int(data, "request-retry", 3, minimum=0, maximum=100),
        max_retry_interval=_int(data, "max-retry-interval", 30, minimum=0, maximum=3600),
        request_log=_bool(data, "request-log", False),
        usage_statistics_enabled=_bool(data, "usage-statistics-enabled", True),
        logging_to_file=_bool(data, "logging-to-file", False),
        debug=_bool(data, "debug", False),
        proxy_url=_proxy_url("proxy-url", data.get("proxy-url")),
        remote_management=RemoteManagement(
            allow_remote=_bool(remote, "allow-remote", False, prefix="remote-management."),
            secret_key=_str(remote, "secret-key", "", prefix="remote-management."),
        ),
        switch_project=_bool(quota, "switch-project", True, prefix="quota-exceeded."),
        switch_preview_model=_bool(quota, "switch-preview-model", True, prefix="quota-exceeded."),
        claude_api_keys=_api_key_entries(data, "claude-api-key"),
        codex_api_keys=_api_key_entries(data, "codex-api-key"),
        gemini_api_keys=_api_key_entries(data, "gemini-api-key"),
        openai_compatibility=_compat_providers(data),
        upstream_base_urls=upstreams,
        oauth_endpoints=oauth,
        body_size_limit=_int(
            data, "body-size-limit-mb", DEFAULT_BODY_SIZE_LIMIT_MB, minimum=1, maximum=4096
        )
        * 1024
        * 1024,
        usage_retention_days=_int(data, "usage-retention-days", 30, minimum=1, maximum=3650),
        error_logs_max_files=_int(data, "error-logs-max-files", 10, minimum=0, maximum=10000),
        logs_max_total_size_mb=_int(data, "logs-max-total-size-mb", 0, minimum=0, maximum=1 << 20),
    )


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError.invalid(key, value, "give a mapping (indented key: value lines)")
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool, prefix: str = "") -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError.invalid(prefix + key, value, "use true or false")
    return value


def _int(
    data: Mapping[str, Any], key: str, default: int, *, minimum: int, maximum: int
) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError.invalid(key, value, f"use a whole number from {minimum} to {maximum}")
    if not minimum <= value <= maximum:
        raise ConfigError.invalid(key, value, f"use a whole number from {minimum} to {maximum}")
    return value


def _str(data: Mapping[str, Any], key: str, default: str, prefix: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError.invalid(prefix + key, value, "use a quoted string")
    return value


def _host(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError.invalid("host", value, 'use an address such as "127.0.0.1"')
    return value.strip()


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError.invalid("port", value, "use a port number from 1 to 65535, e.g. 8317")
    return value


def _url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError.invalid(key, value, "use an http:// or https:// URL")
    return value.rstrip("/")


def _proxy_url(key: str, value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ConfigError.invalid(key, value, 'use a URL such as "socks5://127.0.0.1:1080"')
    if value in ("direct", "none"):
        return value
    if not value.startswith(("http://", "https://", "socks5://", "socks5h://")):
        raise ConfigError.invalid(
            key, value, "use an http://, https:// or socks5:// URL, or leave it empty"
        )
    return value.rstrip("/")


def _api_keys(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError.invalid("api-keys", value, "give a list of strings")
    keys: list[str] = []
    for index, key in enumerate(value):
        if not isinstance(key, str):
            raise ConfigError.invalid(f"api-keys[{index}]", key, "use a quoted string")
        key = key.strip()
        if key and key not in keys:
            keys.append(key)
    return tuple(keys)


def _models(key: str, value: Any) -> tuple[ModelMapping, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError.invalid(key, value, "give a list of {name, alias} entries")
    models = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            models.append(ModelMapping(name=item, alias=item))
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ConfigError.invalid(
                f"{key}[{index}]", item, "each model needs a string 'name' (and optional 'alias')"
            )
        alias = item.get("alias") or item["name"]
        if not isinstance(alias, str):
            raise ConfigError.invalid(f"{key}[{index}].alias", alias, "use a string")
        models.append(ModelMapping(name=item["name"].strip(), alias=alias.strip()))
    return tuple(models)


def _string_list(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError.invalid(key, value, "give a list of strings")
    return tuple(item.strip() for item in value if item.strip())


def _headers(key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError.invalid(key, value, "give a mapping of header names to values")
    return {str(name): str(header_value) for name, header_value in value.items()}


def _priority(key: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError.invalid(key, value, "use a whole number; higher is preferred")
    return value


def _prefix(key: str, value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or "/" in value.strip("/"):
        raise ConfigError.invalid(key, value, "use a single word without '/', e.g. teamA")
    return value.strip("/")


def _api_key_entries(data: Mapping[str, Any], section: str) -> tuple[ApiKeyEntry, ...]:
    value = data.get(section)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError.invalid(section, value, "give a list of entries with an api-key each")
    entries = []
    for index, item in enumerate(value):
        where = f"{section}[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError.invalid(where, item, "each entry must be a mapping with 'api-key'")
        api_key = item.get("api-key")
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigError.invalid(f"{where}.api-key", api_key, "set the provider API key")
        base_url = item.get("base-url") or ""
        if base_url:
            base_url = _url(f"{where}.base-url", base_url)
        entries.append(
            ApiKeyEntry(
                section=section,
                index=index,
                api_key=api_key.strip(),
                base_url=base_url,
                headers=_headers(f"{where}.headers", item.get("headers")),
                proxy_url=_proxy_url(f"{where}.proxy-url", item.get("proxy-url")),
                models=_models(f"{where}.models", item.get("models")),
                excluded_models=_string_list(f"{where}.excluded-models", item.get("excluded-models")),
                priority=_priority(f"{where}.priority", item.get("priority")),
                prefix=_prefix(f"{where}.prefix", item.get("prefix")),
            )
        )
    return tuple(entries)


def _compat_providers(data: Mapping[str, Any]) -> tuple[CompatProvider, ...]:
    value = data.get("openai-compatibility")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError.invalid(
            "openai-compatibility", value, "give a list of providers with name and base-url"
        )
    providers = []
    for index, item in enumerate(value):
        where = f"openai-compatibility[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError.invalid(where, item, "each provider must be a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError.invalid(f"{where}.name", name, "give the provider a name")
        base_url = _url(f"{where}.base-url", item.get("base-url"))

        keys = []
        entries = item.get("api-key-entries")
        if entries is not None and not isinstance(entries, list):
            raise ConfigError.invalid(
                f"{where}.api-key-entries", entries, "give a list of {api-key, proxy-url}"
            )
        for key_index, entry in enumerate(entries or []):
            key_where = f"{where}.api-key-entries[{key_index}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("api-key", ""), str):
                raise ConfigError.invalid(key_where, entry, "each entry needs a string 'api-key'")
            keys.append(
                CompatKey(
                    api_key=entry.get("api-key", "").strip(),
                    proxy_url=_proxy_url(f"{key_where}.proxy-url", entry.get("proxy-url")),
                )
            )
        # Older configs list plain keys under `api-keys`.
        for key_index, key in enumerate(item.get("api-keys") or []):
            if not isinstance(key, str):
                raise ConfigError.invalid(f"{where}.api-keys[{key_index}]", key, "use a string")
            keys.append(CompatKey(api_key=key.strip()))
        if not keys:
            # A provider without keys still serves: some local servers need no key.
            keys.append(CompatKey(api_key=""))

        disabled = item.get("disabled", False)
        if not isinstance(disabled, bool):
            raise ConfigError.invalid(f"{where}.disabled", disabled, "use true or false")

        providers.append(
            CompatProvider(
                index=index,
                name=name.strip(),
                base_url=base_url,
                api_keys=tuple(keys),
                models=_models(f"{where}.models", item.get("models")),
                headers=_headers(f"{where}.headers", item.get("headers")),
                excluded_models=_string_list(f"{where}.excluded-models", item.get("excluded-models")),
                priority=_priority(f"{where}.priority", item.get("priority")),
                prefix=_prefix(f"{where}.prefix", item.get("prefix")),
                disabled=disabled,
            )
        )
    return tuple(providers)
