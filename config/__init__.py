"""Configuration: the CLIProxyAPI-compatible config.yaml, validated and written safely.

The public surface:

- `Config` and its parts: the validated, immutable view every other package reads.
- `ConfigError`: raised for invalid values; its message names the key, the value and the fix.
- `ConfigFile`: loads the file, creates it on first start and applies edits atomically while
  keeping the user's comments, key order and unknown keys.
- `resolve_config_path()`: option, then `CLIPROXY_CONFIG`, then `~/.cli-proxy-api/config.yaml`.
"""

from config.atomic import atomic_write
from config.errors import ConfigError
from config.file import ConfigFile, resolve_config_path
from config.schema import (
    ApiKeyEntry,
    CompatKey,
    CompatProvider,
    Config,
    ModelMapping,
    RemoteManagement,
    parse_config,
)

__all__ = [
    "ApiKeyEntry",
    "CompatKey",
    "CompatProvider",
    "Config",
    "ConfigError",
    "ConfigFile",
    "ModelMapping",
    "RemoteManagement",
    "atomic_write",
    "parse_config",
    "resolve_config_path",
]
