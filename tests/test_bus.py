"""The event bus on its own loop thread: order per publisher, isolation between subscribers,
waiting for an item that comes after an action, draining and closing."""

import asyncio
import threading

import pytest

from fenliu.bus import CallEvent, EventBus, WorkerFact
from fenliu.events import SpeechStarted
from fenliu.sip import protocol as P


def answered(worker: str, n: int) -> WorkerFact:
    return WorkerFact(worker, P.CallAnswered(f"c{n}"))


def test_items_from_many_threads_arrive_complete_and_in_each_publishers_order(bus):
    threads_n, per_thread = 4, 500
    got: list[WorkerFact] = []
    loop_threads: set[int] = set()

    def collect(item):
        loop_threads.add(threading.get_ident())
        got.append(item)

    bus.subscribe(collect)
    go = threading.Barrier(threads_n)

    def publisher(w: int) -> None:
        go.wait()  # all publish at once
        for n in range(per_thread):
            bus.publish(answered(f"w{w}", n))

    threads = [threading.Thread(target=publisher, args=(w,)) for w in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.drain()
    assert len(got) == threads_n * per_thread and bus.published == threads_n * per_thread
    for w in range(threads_n):
        mine = [item.call_id for item in got if item.worker == f"w{w}"]
        assert mine == [f"c{n}" for n in range(per_thread)]
    assert loop_threads == {bus._thread.ident}  # one thread runs every subscriber
    workers = [item.worker for item in got]
    assert any(workers[i] != workers[i + 1] for i in range(len(workers) - 1))  # really interleaved


def test_publishing_on_the_loop_itself_is_delivered_in_order(bus):
    got = []
    bus.subscribe(lambda item: got.append(item.call_id))

    def on_loop():
        for n in range(3):
            bus.publish(answered("w0", n))

    bus.loop.call_soon_threadsafe(on_loop)
    bus.publish(answered("w0", 3))
    bus.drain()
    assert got == ["c0", "c1", "c2", "c3"]


def test_a_failing_subscriber_does_not_starve_the_others(bus):
    before, after = [], []
    bus.subscribe(before.append)

    def broken(item):
        if item.call_id == "c1":
            raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(after.append)
    for n in range(3):
        bus.publish(answered("w0", n))
    bus.drain()
    assert [i.call_id for i in before] == ["c0", "c1", "c2"]
    assert [i.call_id for i in after] == ["c0", "c1", "c2"]
    assert bus.subscriber_errors == 1


def test_unsubscribe_stops_delivery(bus):
    got = []
    unsubscribe = bus.subscribe(got.append)
    bus.publish(answered("w0", 0))
    bus.drain()
    unsubscribe()
    unsubscribe()  # twice is harmless
    bus.publish(answered("w0", 1))
    bus.drain()
    assert [i.call_id for i in got] == ["c0"]


def test_expect_resolves_with_the_first_match_published_after_it(bus):
    def is_answer(item):
        return isinstance(item, WorkerFact) and isinstance(item.fact, P.CallAnswered) and item.worker == "w1"

    bus.publish(answered("w1", 0))  # before the expectation: must not count
    fut = bus.expect(is_answer)
    assert not fut.done()
    bus.publish(WorkerFact("w1", P.CallStarted("c9", 3)))  # after, but not matching
    bus.publish(CallEvent("c9", "caller", "w1", SpeechStarted("c9/caller", 0.5)))
    bus.publish(answered("w2", 1))
    bus.drain()
    assert not fut.done()
    bus.publish(answered("w1", 2))
    bus.publish(answered("w1", 3))
    assert fut.result(timeout=5).call_id == "c2"


def test_expect_does_not_keep_watching_after_its_match(bus):
    n_subscribers = len(bus._subscribers)
    fut = bus.expect(lambda item: True)
    bus.publish(answered("w0", 0))
    assert fut.result(timeout=5).call_id == "c0"
    bus.drain()
    assert len(bus._subscribers) == n_subscribers


def test_drain_waits_until_earlier_items_are_delivered(bus):
    release = threading.Event()
    got = []

    def slow(item):
        release.wait(5)  # the loop is held up on the first item
        got.append(item.call_id)

    bus.subscribe(slow)
    for n in range(3):
        bus.publish(answered("w0", n))
    drained = threading.Event()

    def drainer():
        bus.drain(timeout=10)
        drained.set()

    t = threading.Thread(target=drainer)
    t.start()
    assert not drained.wait(0.3)  # cannot be drained while the first item is being delivered
    release.set()
    t.join(10)
    assert drained.is_set()
    assert got == ["c0", "c1", "c2"]  # every item published before drain() was delivered by then


def test_next_times_out_when_nothing_matches(bus):
    async def wait_for_nothing():
        return await bus.next(lambda item: item.call_id == "never", within=0.2)

    fut = asyncio.run_coroutine_threadsafe(wait_for_nothing(), bus.loop)
    bus.publish(answered("w0", 0))
    with pytest.raises(TimeoutError):
        fut.result(timeout=5)
    bus.drain()
    assert len(bus._subscribers) == 0  # the waiter unsubscribed


def test_next_returns_the_next_match_published_after_it(bus):
    def is_c2(item):
        return item.call_id == "c2"

    async def scenario():
        bus.publish(answered("early", 2))  # on the loop: delivered at once, before the wait
        waiter = asyncio.create_task(bus.next(is_c2, within=5))
        await asyncio.sleep(0)  # next() runs up to its await: subscribed
        for n in range(4):
            bus.publish(answered("w0", n))
        return await waiter

    got = asyncio.run_coroutine_threadsafe(scenario(), bus.loop).result(timeout=5)
    assert got == answered("w0", 2)


def test_close_stops_the_thread_and_later_publishing_is_a_no_op():
    bus = EventBus.on_thread("closing-bus")
    got = []
    bus.subscribe(got.append)
    thread = bus._thread
    for n in range(100):
        bus.publish(answered("w0", n))
    bus.close()
    assert len(got) == 100  # what was queued was delivered first
    assert not thread.is_alive() and bus.loop.is_closed()
    bus.publish(answered("w0", 100))  # no error, nothing delivered
    bus.drain()
    bus.close()  # twice is harmless
    assert len(got) == 100


def test_items_are_small_frozen_values():
    item = answered("w0", 1)
    assert item.kind == "call_answered" and item.call_id == "c1"
    assert WorkerFact("supervisor", P.WorkerLost("w0")).call_id == ""
    ev = CallEvent("c1", "caller", "w0", SpeechStarted("c1/caller", 0.0))
    assert ev.kind == "SpeechStarted"
    with pytest.raises(AttributeError):
        item.worker = "w9"
