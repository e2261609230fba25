"""One event stream for the whole service, on one asyncio loop.

Everything that happens — a worker's call-control fact (``WorkerFact``), a transcript or a
routing decision of a live call (``CallEvent``) — is published here, from whatever thread it
was produced on (a worker link's reader, an ASR process's reader, the API). Publishing from
another thread is a thread-safe hand-off to the loop; subscribers (the store, the log
printer, the API's waiters, the demo, next the console) then run **on the loop thread, one
item at a time, in publication order** — so no subscriber needs a lock of its own.

``EventBus.on_thread()`` gives a bus with its own loop thread, for tools and tests that run the
supervisor without a server; ``fenliu serve`` gives the bus its own running loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fenliu.events import Event
from fenliu.sip.protocol import Fact

log = logging.getLogger("fenliu.bus")


@dataclass(frozen=True)
class CallEvent:
    """A chain event (speech, transcript, decision) of one live call, with where it came from."""

    call_id: str
    leg: str
    worker: str
    event: Event

    @property
    def kind(self) -> str:
        return type(self.event).__name__


@dataclass(frozen=True)
class WorkerFact:
    """A call-control fact, and the worker (or "supervisor", "front") it concerns."""

    worker: str
    fact: Fact

    @property
    def kind(self) -> str:
        return self.fact.kind

    @property
    def call_id(self) -> str:
        return str(getattr(self.fact, "call_id", "") or "")


Item = CallEvent | WorkerFact
Subscriber = Callable[[Item], None]


class EventBus:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._subscribers: list[Subscriber] = []
        self._thread: threading.Thread | None = None
        self.published = 0
        self.subscriber_errors = 0

    @classmethod
    def on_thread(cls, name: str = "fenliu-bus") -> EventBus:
        """A bus with its own event loop running on a daemon thread."""
        loop = asyncio.new_event_loop()
        t = threading.Thread(target=loop.run_forever, name=name, daemon=True)
        t.start()
        bus = cls(loop)
        bus._thread = t
        return bus

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(item)`` on the loop thread for every item from now on; returns unsubscribe."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, item: Item) -> None:
        if self.loop.is_closed():
            return
        if self._on_loop():
            self._dispatch(item)
        else:
            self.loop.call_soon_threadsafe(self._dispatch, item)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _dispatch(self, item: Item) -> None:
        self.published += 1
        for fn in list(self._subscribers):
            try:
                fn(item)
            except Exception:  # one broken consumer must not starve the others
                self.subscriber_errors += 1
                log.exception("event subscriber %r failed on %s", fn, item)

    # -- waiting ------------------------------------------------------------------------------
    async def next(self, pred: Callable[[Item], bool], within: float) -> Item:
        """On the loop: the next item (published after this call) that matches."""
        fut: asyncio.Future[Item] = self.loop.create_future()

        def watch(item: Item) -> None:
            if not fut.done() and pred(item):
                fut.set_result(item)

        unsubscribe = self.subscribe(watch)
        try:
            return await asyncio.wait_for(fut, within)
        finally:
            unsubscribe()

    def expect(self, pred: Callable[[Item], bool]) -> concurrent.futures.Future[Item]:
        """From any thread, *before* acting: a future for the next matching item."""
        fut: concurrent.futures.Future[Item] = concurrent.futures.Future()
        registered = threading.Event()
        holder: dict[str, Any] = {}

        def watch(item: Item) -> None:
            if not fut.done() and pred(item):
                fut.set_result(item)
                holder["unsubscribe"]()

        def register() -> None:
            holder["unsubscribe"] = self.subscribe(watch)
            registered.set()

        if self._on_loop():
            register()
        else:
            self.loop.call_soon_threadsafe(register)
            registered.wait(5)
        return fut

    def drain(self, timeout: float = 5.0) -> None:
        """From another thread: wait until everything published so far has been dispatched."""
        if self._on_loop() or self.loop.is_closed():
            return
        done = threading.Event()
        self.loop.call_soon_threadsafe(done.set)
        done.wait(timeout)

    def close(self) -> None:
        """Stop a bus made by ``on_thread`` (after delivering what is queued)."""
        if self._thread is None:
            return
        self.drain()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
        self._thread = None
