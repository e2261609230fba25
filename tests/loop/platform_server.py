"""A real local HTTP(S) server standing in for a city's 12345 work-order platform and an SMS
gateway, with failure injection, for tests of fenliu's order / SMS clients.

``FakePlatform`` runs an aiohttp server on 127.0.0.1 (free port) in a background thread with
its own event loop, so synchronous tests, async tests and subprocess-based tests can all use it::

    with FakePlatform() as platform:
        ...  # point the client at platform.url
        platform.wait_for_requests(1)
        assert list(platform.orders.values())[0]["order_no"].startswith("GD")

Semantics of one request: it is recorded (``requests``), then an injected ``fail`` answers at
once without doing anything; otherwise the work is done (order / message created, or the
earlier one found for a repeated ``Idempotency-Key``) and only then is the answer delayed
(``slow``), lost (``timeout``) or held (``hold``). So a client that gives up waiting has
nevertheless created the order, which is what idempotency keys are for.

``make_test_pki`` makes a CA, a server certificate for 127.0.0.1 and a client certificate with
the ``openssl`` command line, for tests of mutual TLS.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

HANG_SECONDS = 30.0  # how long `timeout(n)` keeps a request unanswered (less if stopped)


class FakePlatform:
    """A 12345 work-order platform plus SMS gateway on 127.0.0.1.

    Endpoints: ``POST /orders`` -> ``{"order_no": "GD<n>", "status": "accepted"}`` and
    ``POST /sms`` -> ``{"message_id": "SM<n>", "status": "queued"}``; 201 when created, 200 with
    the same answer when the ``Idempotency-Key`` was seen before (nothing new is created), 422
    when a key is reused with a different body, 400 without a key (unless
    ``require_key=False``) or without a JSON body. Any other path is recorded and answers 404.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None, *, require_key: bool = True,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.ssl_context = ssl_context
        self.port = port  # 0: any free port (a platform coming back after an outage: its old one)
        self.require_key = require_key
        self.host = host
        self.url = ""
        #: every request: method, path, query, headers, body (bytes), json (or None),
        #: time (time.time()), monotonic, client_cert (peer certificate subject dict or None)
        self.requests: list[dict[str, Any]] = []
        #: Idempotency-Key -> created order (order_no, status, key, body, created_at)
        self.orders: dict[str, dict[str, Any]] = {}
        #: Idempotency-Key -> queued SMS (message_id, status, key, body, created_at)
        self.messages: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._fail: list[int] = []  # statuses of the next injected failures
        self._retry_after: str | None = None
        self._hang = 0
        self._delay = 0.0
        self._seq = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._gate: asyncio.Event | None = None  # set = answers flow; cleared by hold()
        self._stopping: asyncio.Event | None = None

    # --- life cycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> FakePlatform:
        """Start the server thread and wait until it listens; returns self."""
        if self._thread is not None:
            raise RuntimeError("FakePlatform already started")
        started = threading.Event()
        errors: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:  # reported to start()'s caller
                errors.append(e)
                loop.close()
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-platform", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"fake platform did not start within {timeout} s")
        if errors:
            raise RuntimeError(f"fake platform failed to start: {errors[0]!r}") from errors[0]
        return self

    async def _serve(self) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if self.ssl_context else 'http'}://{self.host}:{port}"

    def stop(self) -> None:
        """Answer whatever is held or hanging, shut the server down and end its thread
        (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def shutdown() -> None:
            assert self._stopping is not None and self._gate is not None
            self._stopping.set()
            self._gate.set()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def __enter__(self) -> FakePlatform:
        return self.start() if self._thread is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- controls (call from any thread) ----------------------------------------------------

    def fail(self, n: int, status: int = 503, retry_after: float | None = None) -> None:
        """The next ``n`` requests answer ``status`` at once and create nothing (optionally
        with a ``Retry-After`` header)."""
        with self._cond:
            self._fail = [status] * n
            self._retry_after = None if retry_after is None else f"{retry_after:g}"

    def timeout(self, n: int) -> None:
        """The next ``n`` requests are processed but their answer hangs for 30 s (or until
        ``stop()``), longer than any client timeout; then a 504 is sent."""
        with self._cond:
            self._hang = n

    def slow(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` (0 switches it off)."""
        with self._cond:
            self._delay = seconds

    def hold(self) -> None:
        """From now on, answers are held back (requests are recorded and processed) until
        ``release()``: lets a test kill a client between sending and acknowledgement."""
        self._call_in_loop(lambda: self._require(self._gate).clear())

    def release(self) -> None:
        """Send every held answer and stop holding."""
        self._call_in_loop(lambda: self._require(self._gate).set())

    def wait_for_requests(self, n: int, timeout: float = 5.0, path: str | None = None) -> list[dict[str, Any]]:
        """Block until at least ``n`` requests (to ``path``, if given) have been recorded;
        returns them. Raises ``TimeoutError`` listing what did arrive."""

        def matching() -> list[dict[str, Any]]:
            return [r for r in self.requests if path is None or r["path"] == path]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= n, timeout):
                seen = [(r["method"], r["path"]) for r in self.requests]
                raise TimeoutError(f"expected {n} request(s){f' to {path}' if path else ''} within "
                                   f"{timeout} s, got {len(matching())}: {seen}")
            return matching()

    # --- request handling (event loop thread) -----------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        record = {
            "method": request.method, "path": request.path, "query": dict(request.query),
            "headers": dict(request.headers), "body": body, "json": parsed,
            "time": time.time(), "monotonic": time.monotonic(),
            "client_cert": dict(x[0] for x in peercert["subject"]) if peercert else None,
        }
        with self._cond:
            self.requests.append(record)
            failure = self._fail.pop(0) if self._fail else None
            retry_after = self._retry_after
            hang = failure is None and self._hang > 0
            if hang:
                self._hang -= 1
            delay = self._delay
            self._cond.notify_all()
        if failure is not None:
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.json_response({"error": "injected failure"}, status=failure, headers=headers)

        response = self._process(request, parsed)
        if delay:
            await asyncio.sleep(delay)
        stopping, gate = self._require(self._stopping), self._require(self._gate)
        if hang:
            try:
                await asyncio.wait_for(stopping.wait(), HANG_SECONDS)
            except TimeoutError:
                pass
            return web.json_response({"error": "answer withheld (timeout injected)"}, status=504)
        await gate.wait()
        return response

    def _process(self, request: web.Request, body: Any) -> web.Response:
        """Do the platform's work for one request: create or find the order / message."""
        if request.method != "POST" or request.path not in ("/orders", "/sms"):
            return web.json_response({"error": "not found"}, status=404)
        if not isinstance(body, dict):
            return web.json_response({"error": "a JSON object body is required"}, status=400)
        key = request.headers.get("Idempotency-Key")
        seq = next(self._seq)
        if not key:
            if self.require_key:
                return web.json_response({"error": "Idempotency-Key header required"}, status=400)
            key = f"auto-{seq}"
        store = self.orders if request.path == "/orders" else self.messages
        with self._cond:
            earlier = store.get(key)
            if earlier is None:
                if request.path == "/orders":
                    created = {"order_no": f"GD{100000 + seq}", "status": "accepted"}
                else:
                    created = {"message_id": f"SM{100000 + seq}", "status": "queued"}
                store[key] = {**created, "key": key, "body": body, "created_at": time.time()}
                return web.json_response(created, status=201)
        if earlier["body"] != body:
            return web.json_response({"error": "Idempotency-Key reused with a different body"}, status=422)
        answer = {k: earlier[k] for k in ("order_no", "message_id", "status") if k in earlier}
        return web.json_response(answer, status=200)

    # --- helpers ----------------------------------------------------------------------------

    def _call_in_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop and wait for it (so a control takes effect before
        it returns)."""
        if self._loop is None:
            raise RuntimeError("FakePlatform not started")

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    @staticmethod
    def _require(value: T | None) -> T:
        if value is None:
            raise RuntimeError("FakePlatform not started")
        return value


@dataclass(frozen=True)
class TestPki:
    """Paths of a throw-away CA, a server certificate for 127.0.0.1 / localhost and a client
    certificate (CN ``fenliu-client``), all PEM, keys unencrypted."""

    __test__ = False  # not a pytest test class

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, require_client_cert: bool = True) -> ssl.SSLContext:
        """A server-side context; with ``require_client_cert`` only clients holding a
        certificate signed by this CA get through the handshake."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca_cert)
        return ctx

    def client_context(self, with_cert: bool = True) -> ssl.SSLContext:
        """A client-side context trusting this CA, presenting the client certificate if asked."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        if with_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def make_test_pki(tmpdir: Path | str, days: int = 2) -> TestPki:
    """Make a CA, a server certificate and a client certificate in ``tmpdir`` with the
    ``openssl`` command line (EC P-256 keys)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("make_test_pki needs the openssl command (apt-get install openssl)")
    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        res = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed:\n{res.stderr}")

    newkey = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run("req", "-x509", *newkey, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
        "-subj", "/CN=fenliu test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    leaf_ext = ("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid\n")
    for name, cn, extra in (("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                                    "extendedKeyUsage=serverAuth\n"),
                            ("client", "fenliu-client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(leaf_ext + extra)
        run("req", *newkey, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", str(days), "-extfile", f"{name}.ext")
    return TestPki(d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key",
                   d / "client.crt", d / "client.key")
