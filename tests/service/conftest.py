"""Fixtures the service tests share."""

import pytest

from fenliu.service.bus import EventBus


@pytest.fixture
def bus():
    """An event bus with its own loop thread (what tools and tests use without a server)."""
    b = EventBus.on_thread("test-bus")
    yield b
    b.close()
