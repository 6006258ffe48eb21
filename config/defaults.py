"""Default values: public upstream endpoints, OAuth endpoints and the first-start config."""

from importlib import resources

DEFAULT_PORT = 8317
DEFAULT_HOST = "127.0.0.1"
DEFAULT_AUTH_DIR = "~/.cli-proxy-api"
DEFAULT_BODY_SIZE_LIMIT_MB = 64

# Upstream base URLs per upstream kind. Accounts with their own `base-url`/`base_url` override
# these; tests point them at fake upstreams on loopback.
DEFAULT_UPSTREAM_BASE_URLS: dict[str, str] = {
    "claude": "https://api.anthropic.com",
    "codex": "https://chatgpt.com/backend-api/codex",
    "openai": "https://api.openai.com/v1",
    "gemini": "https://generativelanguage.googleapis.com",
    "gemini-cli": "https://cloudcode-pa.googleapis.com",
}

# Public OAuth endpoints of each provider (authorize and token URLs).
DEFAULT_OAUTH_ENDPOINTS: dict[str, dict[str, str]] = {
    "claude": {
        "authorize-url": "https://claude.ai/oauth/authorize",
        "token-url": "https://platform.claude.com/v1/oauth/token",
    },
    "codex": {
        "authorize-url": "https://auth.openai.com/oauth/authorize",
        "token-url": "https://auth.openai.com/oauth/token",
    },
    "gemini": {
        "authorize-url": "https://accounts.google.com/o/oauth2/auth",
        "token-url": "https://oauth2.googleapis.com/token",
        "userinfo-url": "https://www.googleapis.com/oauth2/v1/userinfo?alt=json",
    },
}

ROUTING_STRATEGIES: dict[str, str] = {
    "round-robin": "round-robin",
    "roundrobin": "round-robin",
    "rr": "round-robin",
    "": "round-robin",
    "fill-first": "fill-first",
    "fillfirst": "fill-first",
    "ff": "fill-first",
}


def example_config_text() -> str:
    """Return the commented template written on first start."""
    return resources.files("config").joinpath("config.example.yaml").read_text("utf-8")
