"""Listening setup for `mitmdump -s addons/cliproxy.py`: reverse mode, never an open proxy.

Started with only `-s`, mitmproxy would serve its default mode: a forward proxy open on every
interface at port 8080. A script cannot change the mode in time: mitmproxy starts binding its
listeners before it imports the script (the bind only waits for an address lookup, so it may
finish first). So when the entry script is imported with the default mode, it replaces the
process at once (`os.execv`) with the same command plus an explicit `--mode` for reverse mode
on the config's host and port, and `::1` for the loopback default. The import runs on
mitmproxy's event loop, so no request is read in between, and the exec closes any listener
the old process got to bind.

The reverse target is a placeholder nothing listens on: every request is either answered
locally or routed to an account, never sent to that target. An explicit non-reverse `--mode`
is refused: the process exits at once with a message naming the working command.
"""

import errno
import logging
import os
import socket
import sys

from mitmproxy import ctx

from config import ConfigError, ConfigFile, resolve_config_path
from config.defaults import DEFAULT_HOST, DEFAULT_PORT

logger = logging.getLogger(__name__)

# Port 9 is the discard service port; nothing is expected to listen there on loopback.
PLACEHOLDER_TARGET = "http://127.0.0.1:9"
WORKING_COMMAND = "./run.sh, or: mitmdump -s addons/cliproxy.py (without --mode)"


def reverse_modes(host: str, port: int) -> list[str]:
    """Return the mitmproxy mode specs for listening on `host:port`."""
    if host in ("", "0.0.0.0", "::"):
        return [f"reverse:{PLACEHOLDER_TARGET}@{port}"]
    modes = [f"reverse:{PLACEHOLDER_TARGET}@{host}:{port}"]
    if host in ("127.0.0.1", "localhost") and ipv6_loopback_available():
        # mitmproxy passes a bracketed host through to getaddrinfo, so write it bare.
        modes.append(f"reverse:{PLACEHOLDER_TARGET}@::1:{port}")
    return modes


def port_in_use(host: str, port: int) -> bool:
    """Return True when something already listens on `host:port`, so it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def port_in_use_message(host: str, port: int, config_path: object) -> str:
    return (
        f"port {port} on {host or 'every interface'} is already in use (another cliproxy?); "
        f"stop that process or set another `port` in {config_path}"
    )


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def configured_address() -> tuple[str, int]:
    """Read host and port from the config that the proxy will load (defaults when absent)."""
    deferred = ctx.options.deferred.get("cliproxy_config")
    values = getattr(deferred, "val", None) or []
    path = resolve_config_path(values[-1] if values else "")
    if not path.exists():
        return DEFAULT_HOST, DEFAULT_PORT
    config = ConfigFile(path).load()
    return config.host, config.port


def ensure_reverse_mode() -> None:
    """Make sure mitmproxy serves cliproxy's reverse mode; re-execute or stop otherwise."""
    modes = list(ctx.options.mode)
    explicit_address = any("@" in mode for mode in modes) or ctx.options.listen_port is not None
    if modes and all(mode.startswith("reverse:") for mode in modes) and explicit_address:
        return
    if modes != ["regular"] and not all(mode.startswith("reverse:") for mode in modes):
        _stop(f"cliproxy serves reverse mode only; --mode {' '.join(modes)} would run an open proxy.")
        return

    try:
        host, port = configured_address()
    except ConfigError as error:
        _stop(f"cliproxy cannot start: {error}.")
        return
    if ctx.options.listen_port is not None:
        port = ctx.options.listen_port
    if ctx.options.listen_host:
        host = ctx.options.listen_host
    if port_in_use(host, port):
        _stop(port_in_use_message(host, port, "the config") + ".")
        return

    # A reverse mode without a listen address would listen on every interface at 8080; the
    # target does not matter (cliproxy routes each request), so it is replaced as well.
    arguments = [sys.executable, sys.argv[0]]
    for mode in reverse_modes(host, port):
        arguments += ["--mode", mode]
    arguments += ["--set", "connection_strategy=lazy", *without_mode_options(sys.argv[1:])]
    logger.info("switching mitmproxy to reverse mode on %s:%d", host or "*", port)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, arguments)
    except OSError as error:
        _stop(f"cliproxy could not restart mitmproxy in reverse mode: {error}.")


def without_mode_options(argv: list[str]) -> list[str]:
    """Drop `--mode X`, `--mode=X` and `-m X` from a mitmproxy command line."""
    kept: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
            continue
        if argument in ("--mode", "-m"):
            skip = True
            continue
        if argument.startswith("--mode="):
            continue
        kept.append(argument)
    return kept


def _stop(reason: str) -> None:
    """Exit at once with status 2, before mitmproxy can serve a single request."""
    message = f"{reason} Stopping. Start cliproxy with: {WORKING_COMMAND}"
    logger.error(message)
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)
