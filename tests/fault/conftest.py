"""Fixtures of the fault/load tests: persistent control connections and event subscribers, closed after."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fault.fault_probe import Events, Wire


@pytest.fixture
def wire() -> Iterator[Any]:
    """Factory: wire(daemon) opens a persistent control connection, closed at teardown."""
    made: list[Wire] = []

    def open_(daemon: Any) -> Wire:
        w = Wire(daemon.endpoint)
        made.append(w)
        return w

    yield open_
    for w in made:
        w.close()


@pytest.fixture
def events() -> Iterator[Any]:
    """Factory: events(daemon) subscribes to every event of circusd, closed at teardown."""
    made: list[Events] = []

    def open_(daemon: Any, topic: str = "") -> Events:
        e = Events(daemon.pubsub_endpoint, topic)
        made.append(e)
        return e

    yield open_
    for e in made:
        e.close()
