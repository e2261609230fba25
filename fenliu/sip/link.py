"""The supervisor's end of one SIP worker: spawn it, configure it, read its facts, send commands.

Facts arrive as typed messages (``fenliu.sip.protocol``) on a stream socket; each one is
kept in a bounded history (numbered, so a test or the CLI can wait for a fact that happens
*after* its own action: ``n = link.mark(); act(); link.wait(pred, since=n)``) and handed to
``on_fact``. Audio goes wherever ``WorkerSettings.audio_paths`` say: the ASR processes, or — when
it is empty — this link's own datagram socket, whose frames are handed to ``on_frame`` on the
receiving thread. ``stop()`` asks the worker to shut down, waits, and kills it if it does not
go (no orphans).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fenliu.errors import FenliuError
from fenliu.sip import protocol as P
from fenliu.sip.protocol import FRAME_HEADER, LEG_CLOSE, LEG_OPEN, WorkerSettings

FrameHandler = Callable[[int, int, int, bytes], None]  # slot, leg, seq, pcm
HISTORY = 5000  # facts kept per link for waiters (the store keeps everything)


class WorkerLink:
    def __init__(self, settings: WorkerSettings, on_frame: FrameHandler | None = None,
                 on_fact: Callable[[P.Fact], None] | None = None) -> None:
        self.name = settings.name
        self._dir = tempfile.TemporaryDirectory(prefix=f"fenliu-{settings.name}-")
        self.control_path = str(Path(self._dir.name) / "control.sock")
        self._audio: socket.socket | None = None
        if not settings.audio_paths:  # frames come back to us
            path = str(Path(self._dir.name) / "audio.sock")
            self._audio = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._audio.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._audio.bind(path)
            settings = replace(settings, audio_paths=(path,))
        self.settings = settings
        self.on_frame = on_frame
        self.on_fact = on_fact
        self.frames_received = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.control_path)
        self._server.listen(1)
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._history: deque[tuple[int, P.Fact]] = deque(maxlen=HISTORY)
        self._count = 0
        self._cv = threading.Condition()
        self.ready: P.Ready | None = None
        self.audio_closed: set[int] = set()  # slots whose last frame has been received (own audio socket)

    @classmethod
    def loopback(cls, name: str, sip_port: int, rtp_port: int, on_frame: FrameHandler | None = None,
                 **settings: Any) -> WorkerLink:
        """A worker on 127.0.0.1 taking any number (tests, benchmarks, the demo's tools)."""
        settings.setdefault("users", ("*",))
        return cls(WorkerSettings(name, "127.0.0.1", sip_port, rtp_port, **settings), on_frame)

    @property
    def sip_port(self) -> int:
        return self.settings.sip_port

    @property
    def rtp_port(self) -> int:
        return self.settings.rtp_port

    def start(self, timeout: float = 15.0) -> P.Ready:
        cmd = [sys.executable, "-m", "fenliu.sip.ua.worker", "--control", self.control_path]
        # the worker's own output (pjlib's start-up lines) goes to our stderr, never stdout,
        # which `fenliu serve --json` keeps for events; the password travels in Configure
        # (a socket only we can open), never in argv or the environment
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=2, env=dict(os.environ))
        self._server.settimeout(timeout)
        try:
            self._conn, _ = self._server.accept()
        except TimeoutError as e:
            self.stop()
            raise FenliuError(f"SIP worker {self.name} did not connect within {timeout:.0f} s") from e
        self.send(P.Configure(self.settings))
        mark = self.mark()
        readers = [self._read_facts] + ([self._read_frames] if self._audio is not None else [])
        for target in readers:
            t = threading.Thread(target=target, name=f"{self.name}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        try:
            first = self.wait(lambda f: isinstance(f, P.Ready | P.StartFailed | P.WorkerLost), timeout, since=mark)
        except TimeoutError as e:
            self.stop()
            raise FenliuError(f"SIP worker {self.name} did not report ready within {timeout:.0f} s") from e
        if not isinstance(first, P.Ready):
            self.stop()
            why = first.message if isinstance(first, P.StartFailed) else f"exited ({first.kind})"
            raise FenliuError(f"SIP worker {self.name} failed: {why}")
        self.ready = first
        return first

    def send(self, cmd: P.Command) -> None:
        if self._conn is None:
            raise FenliuError(f"SIP worker {self.name} is not connected")
        with self._send_lock:
            self._conn.sendall(P.encode(cmd))

    # -- waiting for facts --------------------------------------------------------------------
    def mark(self) -> int:
        """The number the next fact will get: wait with ``since=`` this for facts after an action."""
        with self._cv:
            return self._count

    def wait(self, pred: Callable[[Any], bool], timeout: float = 10.0, since: int = 0, nth: int = 1) -> Any:
        """The ``nth`` fact numbered ``since`` or later that matches (nothing is discarded)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                hits = [fact for n, fact in self._history if n >= since and pred(fact)]
                if len(hits) >= nth:
                    return hits[nth - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching fact (#{nth}) from worker {self.name} within {timeout} s")
                self._cv.wait(left)

    def wait_audio_closed(self, slot: int, timeout: float = 10.0) -> None:
        """Until the end-of-call marker of ``slot`` came in on this link's audio socket."""
        with self._cv:
            if not self._cv.wait_for(lambda: slot in self.audio_closed, timeout):
                raise TimeoutError(f"worker {self.name}: no end of audio for slot {slot} within {timeout} s")

    def facts(self, since: int = 0) -> list[P.Fact]:
        with self._cv:
            return [f for n, f in self._history if n >= since]

    def _publish(self, fact: P.Fact) -> None:
        with self._cv:
            self._history.append((self._count, fact))
            self._count += 1
            self._cv.notify_all()
        if self.on_fact is not None:
            self.on_fact(fact)

    # -- lifecycle ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Tell the worker to hang up and exit, without waiting (``stop`` waits)."""
        if self._closing:
            return
        self._closing = True
        if self._conn is not None:
            try:
                self.send(P.Shutdown("supervisor stopping"))
            except OSError:
                pass

    def stop(self, timeout: float = 5.0) -> int | None:
        self.request_stop()
        rc = None
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        for s in (self._conn, self._server, self._audio):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self._dir.cleanup()
        return rc

    def _read_facts(self) -> None:
        assert self._conn is not None
        buf = b""
        while True:
            try:
                data = self._conn.recv(65536)
            except OSError:
                break
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = P.decode(line)
                except P.ProtocolError as e:
                    msg = P.WorkerError(f"unreadable message from worker: {e}")
                if isinstance(msg, P.Fact):
                    self._publish(msg)
        if not self._closing:
            rc = None
            if self.proc is not None:
                try:
                    rc = self.proc.wait(2)
                except subprocess.TimeoutExpired:
                    rc = None
            self._publish(P.WorkerLost(self.name, rc))

    def _read_frames(self) -> None:
        assert self._audio is not None
        n = FRAME_HEADER.size
        while True:
            try:
                data = self._audio.recv(65536)
            except OSError:
                break
            if len(data) < n:
                continue
            slot, leg, seq = FRAME_HEADER.unpack_from(data)
            if leg == LEG_CLOSE:  # every frame of this slot's call has been handed on
                with self._cv:
                    self.audio_closed.add(slot)
                    self._cv.notify_all()
                continue
            if leg >= LEG_OPEN:
                continue  # the call's facts tell the supervisor which call a slot is
            self.frames_received += 1
            if self.on_frame is not None:
                self.on_frame(slot, leg, seq, data[n:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
