"""Waiting, from the event loop, on a plain (sync) zmq socket: no polling, no thread."""

from __future__ import annotations

import asyncio
from typing import Any

import zmq


async def readable(sock: zmq.Socket[Any]) -> None:
    """Return once `sock` has a message to read.

    zmq's FD only says "events may have changed": ZMQ_EVENTS is checked before every wait, which also
    re-arms the notification (zmq_getsockopt(3), ZMQ_FD).
    """
    loop = asyncio.get_running_loop()
    fd = int(sock.getsockopt(zmq.FD))  # an int for ZMQ_FD
    while not int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
