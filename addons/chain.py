"""The addon chain in request order: gate → management → route → failover/stream → tap."""

from addons import streamretry
from addons.failover import Failover
from addons.gate import KeyGate
from addons.lifecycle import Lifecycle
from addons.route import Router
from addons.runtime import Runtime
from config import ConfigFile, resolve_config_path


def build_addons(runtime: Runtime | None = None) -> list[object]:
    """Install the stream retry extension and return cliproxy's addons, in hook order."""
    streamretry.install()
    if runtime is None:
        # Lifecycle.configure() replaces the config file with the one the options name.
        runtime = Runtime(ConfigFile(resolve_config_path()))
    return [
        Lifecycle(runtime),
        KeyGate(runtime),
        Router(runtime),
        Failover(runtime),
    ]
