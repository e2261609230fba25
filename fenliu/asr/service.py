"""Recognition in processes: each ASR process loads the model once and recognises the legs of
the SIP workers assigned to it, with the audio coming **straight from those workers** (one
Unix datagram socket per worker, bound here) — the supervisor never touches a frame.

Why processes (measured, see the README's capacity table): in the supervisor, one Python
thread per leg plus the frame receivers share one GIL; from 4 conversations frames queue up
and are dropped. Here each process runs one loop over its sockets (VAD, Vosk, router), so N
processes use N cores, and per-frame Python work happens once, where the audio lands.

Back-pressure, stated:
- the call's own audio is never affected (recognition only reads a copy);
- a process takes at most ``asr.streams_per_process`` legs; a leg beyond that is opened
  *degraded* — the call is answered and bridged as usual, the operator sees "no live
  suggestion", and it is counted;
- a leg whose recognition falls ``asr.max_delay`` seconds behind the call is marked degraded
  (reported once) and stops being recognised, so the other legs catch up.

Supervisor side: :class:`AsrPool`. Process side: :func:`main`.
Between them: length-prefixed pickles of our own frozen dataclasses on a Unix stream socket
(same fenliu on both ends; the socket lives in a private temporary directory).
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fenliu.errors import FenliuError
from fenliu.sip import protocol as P
from fenliu.sip.protocol import FRAME_HEADER, LEG_CLOSE, LEG_OPEN, leg_label

log = logging.getLogger("fenliu.asr.service")

_LEN = struct.Struct("!I")
ENTRY = "import sys; from fenliu.asr.service import main; sys.exit(main(sys.argv[1:]))"
STATS_EVERY_S = 2.0


def send_obj(sock: socket.socket, obj: Any, lock: threading.Lock | None = None) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if lock is None:
        sock.sendall(_LEN.pack(len(data)) + data)
    else:
        with lock:
            sock.sendall(_LEN.pack(len(data)) + data)


class ObjReader:
    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[Any]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = _LEN.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                break
            out.append(pickle.loads(self.buf[4:4 + n]))
            self.buf = self.buf[4 + n:]
        return out


@dataclass(frozen=True)
class AsrJob:
    """Everything an ASR process needs (sent once, first)."""

    name: str
    settings: Any  # fenliu.settings.Settings
    router: Any  # fenliu.router.Router (travels as its recipe)
    engine: Any  # an AsrEngine (travels as its recipe, e.g. VoskEngine's model path)
    sockets: dict[str, str]  # SIP worker name -> datagram socket path to bind


@dataclass(frozen=True)
class WorkerGone:
    """Down to an ASR process: a worker died; end its legs (no LEG_CLOSE will come)."""

    worker: str


@dataclass(frozen=True)
class AsrReady:
    name: str
    pid: int


# -- the process ---------------------------------------------------------------------------------


@dataclass
class LegState:
    leg: str
    pipe: Any  # StreamPipeline, or None when degraded
    first_wall: float = 0.0
    first_seq: int = 0
    frames: int = 0
    dropped: int = 0
    degraded: str = ""


@dataclass
class CallStreams:
    call_id: str
    worker: str
    legs: dict[int, LegState] = field(default_factory=dict)


class Recogniser:
    """The loop of one ASR process (also usable in-process for tests)."""

    def __init__(self, job: AsrJob, send: Callable[[Any], None]) -> None:
        from fenliu.asr.pipeline import vad_config

        self.job = job
        self.send = send
        self.settings = job.settings
        self.vad = vad_config(job.settings)
        self.calls: dict[tuple[str, int], CallStreams] = {}
        self.active = 0
        self.frames = 0
        self.orphan_frames = 0
        self.degraded_legs = 0
        self.lag_max = 0.0
        self.busy_s = 0.0
        self._last_shed = 0.0

    def open_leg(self, cs: CallStreams, leg: int) -> LegState:
        from fenliu.asr.pipeline import StreamPipeline, call_router

        name = leg_label(leg)
        ls = LegState(name, None)
        cs.legs[leg] = ls
        if self.active >= self.settings.asr.streams_per_process:
            self._degrade(cs, ls, f"识别繁忙，无实时建议 / ASR pool full ({self.active} legs on {self.job.name}): "
                                  f"no live suggestion for this leg; add cores or asr.processes")
            return ls
        router = call_router(self.job.router, self.settings, cs.call_id) if leg == 0 else None
        ls.pipe = StreamPipeline(f"{cs.call_id}/{name}", 16000, self.job.engine, vad=self.vad,
                                 vad_enabled=self.settings.vad.enabled, router=router)
        self.active += 1
        return ls

    def _degrade(self, cs: CallStreams, ls: LegState, why: str) -> None:
        if ls.pipe is not None:
            self.active -= 1
            ls.pipe = None
        ls.degraded = why
        self.degraded_legs += 1
        self.send(("fact", cs.worker, P.CallDegraded(cs.call_id, why, ls.leg)))

    def on_datagram(self, worker: str, data: bytes, arrived: float | None = None) -> None:
        n = FRAME_HEADER.size
        if len(data) < n:
            return
        slot, leg, seq = FRAME_HEADER.unpack_from(data)
        key = (worker, slot)
        if leg == LEG_OPEN:
            old = self.calls.pop(key, None)
            if old is not None:
                self.close_call(old)
            cs = CallStreams(data[n:].decode(errors="replace"), worker)
            self.calls[key] = cs
            self.open_leg(cs, 0)
            return
        if leg == LEG_CLOSE:
            closing = self.calls.pop(key, None)
            if closing is not None:
                self.close_call(closing)
            return
        found = self.calls.get(key)
        if found is None:
            self.orphan_frames += 1
            return
        cs = found
        ls = cs.legs.get(leg) or self.open_leg(cs, leg)
        self.frames += 1
        now = time.monotonic() if arrived is None else arrived
        if not ls.first_wall:
            ls.first_wall, ls.first_seq = now, seq
        ls.frames += 1
        if ls.pipe is None:
            ls.dropped += 1
            return
        # how far recognition is behind the call: wall time since the leg's first frame against the
        # sender's own frame count (a frame lost on the way does not count as lag)
        lag = (time.monotonic() - ls.first_wall) - ((seq - ls.first_seq) & 0xFFFFFFFF) * 0.02
        self.lag_max = max(self.lag_max, lag)
        t0 = time.perf_counter()
        events = ls.pipe.push(data[n:])
        self.busy_s += time.perf_counter() - t0
        for ev in events:
            self.send(("event", cs.call_id, ls.leg, cs.worker, ev))
        if lag > self.settings.asr.max_delay:
            self.shed(lag)

    def shed(self, lag: float) -> None:
        """This process is falling behind: stop recognising ONE leg, then give the others
        ``max_delay`` seconds to catch up before shedding another. First an operator or hotline
        leg (they never drive the router), then the caller leg that has run longest (its
        suggestion, if any, is already on the operator's screen)."""
        now = time.monotonic()
        if now - self._last_shed < self.settings.asr.max_delay:
            return
        live = [(cs, ls) for cs in self.calls.values() for ls in cs.legs.values() if ls.pipe is not None]
        if not live:
            return
        cs, ls = min(live, key=lambda x: (x[1].leg == "caller", x[1].first_wall or now))
        self._last_shed = now
        self._degrade(cs, ls, f"识别延迟超过 {self.settings.asr.max_delay:.1f} 秒，实时建议不可用 / recognition "
                              f"{lag:.1f} s behind on {self.job.name}: live suggestion unavailable for this leg")

    def close_call(self, cs: CallStreams) -> None:
        for ls in cs.legs.values():
            audio_s = round(ls.frames * 0.02, 2)
            recognised = 0.0
            if ls.pipe is not None:
                try:
                    for ev in ls.pipe.close():
                        self.send(("event", cs.call_id, ls.leg, cs.worker, ev))
                    recognised = round(ls.pipe.recognised_seconds, 2)
                finally:
                    self.active -= 1
                    ls.pipe = None
            self.send(("fact", cs.worker, P.AsrDone(cs.call_id, ls.leg, ls.dropped, audio_s, recognised,
                                                    bool(ls.degraded))))

    def worker_gone(self, worker: str) -> None:
        for key in [k for k in self.calls if k[0] == worker]:
            self.close_call(self.calls.pop(key))

    def stats(self) -> P.AsrStats:
        s = P.AsrStats(self.job.name, self.active, self.frames, self.orphan_frames, self.degraded_legs,
                       round(self.lag_max, 3), round(self.busy_s, 3))
        self.lag_max = 0.0
        return s


def warm_up(job: AsrJob) -> None:
    """Load now what the first call would otherwise wait seconds for, stalling every leg of
    this process: jieba's dictionaries, the router model's first pass, a recogniser."""
    job.router.decide("热身：楼上装修太吵了，没有人受伤")
    if job.engine is not None and hasattr(job.engine, "warm"):
        job.engine.warm(2)  # before ready; the rest in the background


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="fenliu ASR process (started by the supervisor)")
    ap.add_argument("--control", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s asr %(message)s")
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.connect(a.control)
    reader = ObjReader()
    job: AsrJob | None = None
    while job is None:
        data = ctl.recv(1 << 20)
        if not data:
            return 2
        objs = reader.feed(data)
        job = objs[0] if objs else None
    lock = threading.Lock()

    def send(obj: Any) -> None:
        send_obj(ctl, obj, lock)

    sel = selectors.DefaultSelector()
    socks = []
    for worker, path in job.sockets.items():
        if os.path.exists(path):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(path)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, worker)
        socks.append(s)
    rec = Recogniser(job, send)
    warm_up(job)
    more = min(job.settings.asr.streams_per_process, job.settings.asr.warm_streams or 8) - 2
    if more > 0 and hasattr(job.engine, "warm"):
        # the rest in the background: Vosk releases the GIL, so this uses a spare core instead of
        # stalling the recognition loop (warming inside the loop held every leg up ~2 s each time)
        threading.Thread(target=job.engine.warm, args=(more,), name="asr-warm", daemon=True).start()
    # A Unix datagram socket queues only net.unix.max_dgram_qlen datagrams (10 by default:
    # 100 ms of two legs), so a receiver thread empties the sockets at once into memory and the
    # recognition loop (which releases the GIL inside Vosk) works from there.
    inbox: queue.SimpleQueue[tuple[str, bytes, float] | None] = queue.SimpleQueue()
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            for key, _ in sel.select(0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                now = time.monotonic()
                while True:
                    try:
                        inbox.put((key.data, sock.recv(65536), now))
                    except BlockingIOError:
                        break
        inbox.put(None)

    receiver = threading.Thread(target=receive, name="asr-receiver", daemon=True)
    receiver.start()

    def control() -> None:
        ctl.settimeout(None)
        while True:
            try:
                data = ctl.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            for obj in reader.feed(data):
                if obj == "stop":
                    stop.set()
                    return
                inbox.put(("", pickle.dumps(obj), 0.0))  # in order with the frames
        stop.set()

    threading.Thread(target=control, name="asr-control", daemon=True).start()
    send(AsrReady(job.name, os.getpid()))
    next_stats = time.monotonic() + STATS_EVERY_S
    while True:
        try:
            item = inbox.get(timeout=0.5)
        except queue.Empty:
            item = ("", b"", 0.0)
        if item is None:
            break
        worker, data, arrived = item
        if worker:
            rec.on_datagram(worker, data, arrived)
        elif data:
            obj = pickle.loads(data)
            if isinstance(obj, WorkerGone):
                rec.worker_gone(obj.worker)
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + STATS_EVERY_S
            send(("fact", "asr", rec.stats()))
    for cs in list(rec.calls.values()):
        rec.close_call(cs)
    rec.calls.clear()
    send(("fact", "asr", rec.stats()))
    for s in socks:
        s.close()
    return 0


# -- the supervisor's side -------------------------------------------------------------------------


class AsrProcess:
    def __init__(self, job_name: str, sockets: dict[str, str], make_job: Callable[[str, dict[str, str]], AsrJob],
                 on_item: Callable[[Any], None], folder: Path) -> None:
        self.name = job_name
        self.sockets = sockets
        self.make_job = make_job
        self.on_item = on_item
        self.control_path = str(folder / f"{job_name}.ctl")
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: socket.socket | None = None
        self.lock = threading.Lock()
        self.pid = 0
        self.stats: P.AsrStats | None = None
        self.closing = False

    def start(self, timeout: float = 120.0) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(self.control_path):
            os.unlink(self.control_path)
        server.bind(self.control_path)
        server.listen(1)
        server.settimeout(timeout)
        # not "-m fenliu.asr.service": the pickled classes must live in this module, not __main__
        self.proc = subprocess.Popen([sys.executable, "-c", ENTRY, "--control", self.control_path],
                                     stdin=subprocess.DEVNULL, stdout=2)
        try:
            self.conn, _ = server.accept()
        except TimeoutError as e:
            raise FenliuError(f"ASR process {self.name} did not connect within {timeout:.0f} s") from e
        finally:
            server.close()
        send_obj(self.conn, self.make_job(self.name, self.sockets), self.lock)
        reader = ObjReader()
        self.conn.settimeout(timeout)
        got: list[Any] = []
        while not got:
            data = self.conn.recv(1 << 16)
            if not data:
                raise FenliuError(f"ASR process {self.name} exited while loading the model "
                                  f"(rc {self.proc.wait(5)}); see its error above")
            got = reader.feed(data)
        if not isinstance(got[0], AsrReady):
            raise FenliuError(f"ASR process {self.name}: unexpected first message {got[0]!r}")
        self.pid = got[0].pid
        self.conn.settimeout(None)
        for extra in got[1:]:
            self.on_item(extra)
        threading.Thread(target=self._read, args=(reader,), name=f"{self.name}-reader", daemon=True).start()

    def _read(self, reader: ObjReader) -> None:
        assert self.conn is not None
        while True:
            try:
                data = self.conn.recv(1 << 16)
            except OSError:
                break
            if not data:
                break
            for obj in reader.feed(data):
                if isinstance(obj, tuple) and obj and obj[0] == "fact" and isinstance(obj[2], P.AsrStats):
                    self.stats = obj[2]
                self.on_item(obj)
        if not self.closing:
            self.on_item(("lost", self.name))

    def tell(self, obj: Any) -> None:
        if self.conn is not None:
            try:
                send_obj(self.conn, obj, self.lock)
            except OSError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        self.closing = True
        self.tell("stop")
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.conn is not None:
            self.conn.close()


class AsrPool:
    """N ASR processes, each with one socket per SIP worker: a worker sends each call to the
    process its slot picks (``slot % N``), so calls spread evenly whichever worker takes them
    (a static worker -> process assignment left one core with 4 legs and the other with 2)."""

    def __init__(self, n: int, worker_names: list[str], make_job: Callable[[str, dict[str, str]], AsrJob],
                 on_item: Callable[[Any], None]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="fenliu-asr-")
        folder = Path(self._dir.name)
        n = max(1, n)
        self.paths = {w: tuple(str(folder / f"{w}.asr{i}") for i in range(n)) for w in worker_names}
        self.procs: list[AsrProcess] = []
        for i in range(n):
            mine = {w: self.paths[w][i] for w in worker_names}
            self.procs.append(AsrProcess(f"asr{i}", mine, make_job, on_item, folder))

    def start(self) -> None:
        errors: list[BaseException] = []

        def start_one(p: AsrProcess) -> None:
            try:
                p.start()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=start_one, args=(p,)) for p in self.procs]  # models load in parallel
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise FenliuError(f"ASR processes failed to start: {errors[0]}")

    def audio_paths(self, worker: str) -> tuple[str, ...]:
        return self.paths[worker]

    def worker_gone(self, worker: str) -> None:
        for p in self.procs:
            p.tell(WorkerGone(worker))

    def restart(self, name: str) -> None:
        p = next(x for x in self.procs if x.name == name)
        p.stop(timeout=2)
        p.closing = False
        p.start()

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        self._dir.cleanup()

