"""Fixtures for integration tests: the sandbox exchange and the gateway as real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.config.settings import Settings
from gateway.services import Gateway
from sandbox import build_sandbox_app
from tests.support.servers import RunningApp, RunningGateway, start_app, start_gateway


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningApp]:
    """The fake exchange on a free port."""
    running = await start_app(build_sandbox_app())
    yield running
    await running.stop()


@pytest.fixture
def gateway_settings(settings: Settings, sandbox: RunningApp) -> Settings:
    return settings.replace(upstream_url=sandbox.url)


@pytest.fixture
async def gateway(gateway_settings: Settings) -> AsyncIterator[RunningGateway]:
    """The gateway on a free port, in front of the sandbox."""
    running = await start_gateway(gateway_settings)
    yield running
    await running.stop()


def services_of(running: RunningGateway) -> Gateway:
    return running.services
