"""Shared fixtures: a fake upstream per session and a cliproxy process per test."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes import FakeUpstream
from tests.harness import ProxyProcess, default_config, free_port


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture
def start_proxy(tmp_path, upstream: FakeUpstream) -> Iterator[Callable[..., ProxyProcess]]:
    """Start a cliproxy process: `start_proxy(**config_overrides)` or `start_proxy(config=...)`."""
    started: list[ProxyProcess] = []

    def start(
        config: dict[str, Any] | None = None,
        entry: str = "mitmdump",
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> ProxyProcess:
        directory = tmp_path / f"proxy{len(started)}"
        directory.mkdir()
        (directory / "auths").mkdir()
        if config is None:
            config = default_config(upstream, free_port(), directory / "auths", **overrides)
        proxy = ProxyProcess(directory=directory, config=config, entry=entry, env=env or {})
        started.append(proxy)
        return proxy.start()

    yield start

    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(start_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    """A cliproxy process with the default three-accounts-per-provider config."""
    return start_proxy()
