"""The addon chain in request order: gate → management → route → failover/stream → tap (→ web view)."""

from addons import streamretry
from addons.failover import Failover
from addons.gate import KeyGate
from addons.lifecycle import Lifecycle
from addons.management import Management
from addons.route import Router
from addons.runtime import Runtime
from addons.tap import Tap
from addons.webview import WebView, running_with_flow_view
from config import ConfigFile, resolve_config_path


def build_addons(runtime: Runtime | None = None) -> list[object]:
    """Install the stream retry extension and return cliproxy's addons, in hook order."""
    streamretry.install()
    if runtime is None:
        # Lifecycle.configure() replaces the config file with the one the options name.
        runtime = Runtime(ConfigFile(resolve_config_path()))
    failover = Failover(runtime)
    management = Management(runtime)
    addons: list[object] = [
        Lifecycle(runtime),
        KeyGate(runtime),
        management,
        Router(runtime),
        failover,
        Tap(runtime, failover, management),
    ]
    if running_with_flow_view():
        addons.append(WebView(runtime, failover))
    return addons
