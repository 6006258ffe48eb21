"""`cliproxy serve`: cliproxy in a mitmproxy master with only the addons it needs.

mitmdump loads about 33 addons and mitmproxy dispatches every hook past each of them, which
costs more than cliproxy's own work. This launcher builds a master with mitmproxy's core
addons (options, listeners, protocol detection, TLS to upstreams, startup error check) plus
cliproxy's chain, binds reverse mode on the config's host and port from the start, and logs to
stderr. `./run.sh` serves through it.
"""

import asyncio
import logging
import os
from pathlib import Path

from mitmproxy import master, options
from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, termlog, tlsconfig

from addons.chain import build_addons
from addons.dispatch import LeanAddonManager
from addons.lifecycle import announce_generated_key
from addons.listen import port_in_use, port_in_use_message, reverse_modes
from config import ConfigError, ConfigFile, resolve_config_path
from config.file import ENV_CONFIG

logger = logging.getLogger(__name__)


async def serve(config_path: str = "") -> int:
    """Run the proxy until SIGINT/SIGTERM; return the process exit code."""
    path = resolve_config_path(config_path)
    # The chain reads its config path from this variable on its first configure() as well.
    os.environ[ENV_CONFIG] = str(path)
    config_file = ConfigFile(path)
    try:
        generated_key = config_file.ensure_exists()
        config = config_file.load()
    except (ConfigError, OSError) as error:
        logger.error("cliproxy cannot start: %s", error)
        return 2
    if generated_key:
        announce_generated_key(config, generated_key)
    if port_in_use(config.host, config.port):
        logger.error("cliproxy cannot start: %s", port_in_use_message(config.host, config.port, path))
        return 2

    opts = options.Options(mode=reverse_modes(config.host, config.port))
    proxy = master.Master(opts, with_termlog=False)
    proxy.addons = LeanAddonManager(proxy)
    proxy._termlog_addon = termlog.TermLog()
    proxy.addons.add(proxy._termlog_addon)
    proxy.addons.add(
        core.Core(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        disable_h2c.DisableH2C(),
        errorcheck.ErrorCheck(),
    )
    proxy.addons.add(*build_addons())
    opts.update(
        connection_strategy="lazy",
        termlog_verbosity="info",
        cliproxy_config=str(path),
    )

    _install_signal_handlers(proxy)
    await proxy.run()
    return 0


def _install_signal_handlers(proxy: master.Master) -> None:
    import signal

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, proxy.shutdown)


def main(config_path: str | Path = "") -> int:
    logging.getLogger().setLevel(logging.INFO)
    # mitmproxy logs every client connect and disconnect at INFO; at hundreds of connections
    # a second that drowns cliproxy's own lines (and costs time on every request).
    logging.getLogger("mitmproxy.proxy.server").setLevel(logging.WARNING)
    return asyncio.run(serve(str(config_path)))
