"""Start and stop: cliproxy's options, loading the config, and the mitmproxy settings it needs.

`load()` declares `cliproxy_config`; `configure()` creates the config on first start (logging
the generated proxy key once, with how to use it), validates it and refuses to start with the
key, value and fix when it is invalid. It also sets the mitmproxy options the data path relies
on: lazy upstream connections, a long idle timeout for slow non-streamed responses, and the body
size limit.
"""

import asyncio
import logging
import sys

from mitmproxy import ctx, exceptions

from addons.runtime import Runtime
from config import Config, ConfigError, ConfigFile, resolve_config_path

logger = logging.getLogger(__name__)

# A non-streamed response can stay silent for many minutes while a model thinks; mitmproxy's
# default idle timeout (600 s) would cut it.
UPSTREAM_IDLE_TIMEOUT_SECONDS = 3 * 3600


def announce_generated_key(config: Config, key: str) -> None:
    """Show, once, the proxy key created on first start and how clients use it.

    The key goes to the terminal (stderr) only: log lines are kept in files and served by the
    management API, and the log redaction would hide it there anyway.
    """
    logger.warning("created %s with a new proxy key (shown once on the terminal)", config.path)
    print(
        f"cliproxy: created {config.path} with a new proxy key. Clients use it as their API key, "
        f"e.g. ANTHROPIC_BASE_URL=http://{config.host or '127.0.0.1'}:{config.port} "
        f"ANTHROPIC_API_KEY={key}",
        file=sys.stderr,
        flush=True,
    )


class Lifecycle:
    """Loads the configuration and keeps it current while the proxy runs."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.watch_task: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "cliproxy_config",
            str,
            "",
            "Path of cliproxy's config.yaml. Default: $CLIPROXY_CONFIG, else ~/.cli-proxy-api/config.yaml.",
        )

    def configure(self, updated: set[str]) -> None:
        if "cliproxy_config" not in updated:
            return
        path = resolve_config_path(ctx.options.cliproxy_config)
        config_file = ConfigFile(path)
        try:
            generated_key = config_file.ensure_exists()
            self.runtime.config_file = config_file
            self.runtime.load()
        except (ConfigError, OSError) as error:
            raise exceptions.OptionsError(f"cliproxy cannot start: {error}") from error

        config = self.runtime.cfg
        if generated_key:
            announce_generated_key(config, generated_key)
        if config.listens_on_all_interfaces:
            logger.warning(
                "config host is %r: cliproxy listens on every interface, so other machines can reach it",
                config.host,
            )

        ctx.options.update(
            connection_strategy="lazy",
            tcp_timeout=UPSTREAM_IDLE_TIMEOUT_SECONDS,
            # Slightly above cliproxy's own limit: the gate returns 413 in the client's dialect
            # for declared lengths, and mitmproxy stops chunked bodies past this size.
            body_size_limit=str(config.body_size_limit + 1),
        )
        logger.info(
            "cliproxy loaded %s: proxy keys: %d, accounts: %d",
            path, len(config.api_keys), len(self.runtime.pool.accounts()),
        )

    def running(self) -> None:
        self.watch_task = asyncio.get_running_loop().create_task(self.runtime.watch())
        self.runtime.tokens.start()

    async def done(self) -> None:
        if self.watch_task is not None:
            self.watch_task.cancel()
            self.watch_task = None
        await self.runtime.tokens.stop()
