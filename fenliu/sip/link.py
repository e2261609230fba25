"""The supervisor's end of one SIP worker: spawn it, read its JSON events, receive its audio.

Frames arrive as datagrams (``worker.FRAME_HEADER`` + 16 kHz PCM) and are handed to a
callback on the receiving thread; events are JSON lines on a stream socket. ``stop()`` asks the
worker to shut down, waits, and kills it if it does not go (no orphans).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fenliu.errors import FenliuError
from fenliu.sip.protocol import FRAME_HEADER

FrameHandler = Callable[[int, int, int, bytes], None]  # slot, leg, seq, pcm


class WorkerLink:
    def __init__(self, name: str, sip_port: int, rtp_port: int, address: str = "127.0.0.1",
                 on_frame: FrameHandler | None = None, rtp_range: int = 40, seat_uri: str = "",
                 users: str = "*", media_timeout: float = 10.0, allow: str = "", registrar: str = "",
                 reg_user: str = "", reg_password: str = "", reg_expires: int = 300, reg_retry: int = 30) -> None:
        self.name, self.sip_port, self.rtp_port, self.address = name, sip_port, rtp_port, address
        self.rtp_range = rtp_range
        self.seat_uri = seat_uri
        self.users = users
        self.media_timeout = media_timeout
        self.allow = allow
        self.registration = (registrar, reg_user, reg_password, reg_expires, reg_retry)
        self.on_frame = on_frame
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.frames_received = 0
        self._dir = tempfile.TemporaryDirectory(prefix=f"fenliu-{name}-")
        self.control_path = str(Path(self._dir.name) / "control.sock")
        self.audio_path = str(Path(self._dir.name) / "audio.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.control_path)
        self._server.listen(1)
        self._audio = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._audio.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._audio.bind(self.audio_path)
        self._conn: socket.socket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._closing = False

    def start(self, timeout: float = 15.0) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "fenliu.sip.worker", "--name", self.name, "--address", self.address,
               "--sip-port", str(self.sip_port), "--rtp-port", str(self.rtp_port),
               "--rtp-range", str(self.rtp_range), "--control", self.control_path, "--audio", self.audio_path,
               "--seat", self.seat_uri, "--users", self.users, "--media-timeout", str(self.media_timeout),
               "--allow", self.allow]
        registrar, user, password, expires, retry = self.registration
        env = dict(os.environ)
        if registrar:
            cmd += ["--registrar", registrar, "--reg-user", user, "--reg-expires", str(expires),
                    "--reg-retry", str(retry)]
            env["FENLIU_SIP_PASSWORD"] = password  # environment, not argv: ps shows argv to everyone
        # the worker's own output (pjlib's start-up lines) goes to our stderr, never stdout,
        # which `fenliu serve --json` keeps for events
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=2, env=env)
        self._server.settimeout(timeout)
        try:
            self._conn, _ = self._server.accept()
        except TimeoutError as e:
            self.stop()
            raise FenliuError(f"SIP worker {self.name} did not connect within {timeout:.0f} s") from e
        for target in (self._read_events, self._read_frames):
            t = threading.Thread(target=target, name=f"{self.name}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        first = self.wait_event(lambda e: e["event"] in ("ready", "error"), timeout)
        if first["event"] != "ready":
            self.stop()
            raise FenliuError(f"SIP worker {self.name} failed: {first.get('message')}")
        return first

    def send(self, **cmd: Any) -> None:
        if self._conn is None:
            raise FenliuError(f"SIP worker {self.name} is not connected")
        self._conn.sendall((json.dumps(cmd) + "\n").encode())

    def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event from worker {self.name} within {timeout} s")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if pred(ev):
                return ev

    def stop(self, timeout: float = 5.0) -> int | None:
        self._closing = True
        if self._conn is not None:
            try:
                self.send(cmd="shutdown")
            except OSError:
                pass
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

    def _read_events(self) -> None:
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
                    self.events.put(json.loads(line))
                except json.JSONDecodeError:
                    continue
        if not self._closing:
            self.events.put({"event": "worker_lost", "worker": self.name,
                             "rc": self.proc.poll() if self.proc else None})

    def _read_frames(self) -> None:
        n = FRAME_HEADER.size
        while True:
            try:
                data = self._audio.recv(65536)
            except OSError:
                break
            if len(data) < n:
                continue
            slot, leg, seq = FRAME_HEADER.unpack_from(data)
            self.frames_received += 1
            if self.on_frame is not None:
                self.on_frame(slot, leg, seq, data[n:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
