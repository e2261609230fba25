"""The console and the HTTP API of `fenliu serve` (aiohttp): see docs/api.md for every endpoint,
the roles, the CSRF rule and the event stream; ``GET /api/openapi.json`` describes them.

Order of checks on every request (``guard``): the Host must be one of this server's names and a
browser's Origin must be this server (else 403, before anything is read or done); then the
user (session cookie or bearer token; 401), then for a cookie session the CSRF header on
state-changing requests (403), then the role the route needs (403). Bodies are JSON objects of
at most ``console.max_body_kb`` and 32 levels (413 / 400). Errors are JSON
``{"error", "code"}`` and never echo more than 64 characters of what was sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import hmac
import io
import ipaddress
import json
import logging
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import WSMsgType, web

from fenliu.bus import EventBus, Item, WorkerFact
from fenliu.console.auth import ROLE_NAMES, Accounts, AuthError, User, credential_of
from fenliu.console.centre import Centre, CentreUnavailable
from fenliu.console.feed import EventFeed
from fenliu.console.streams import guard_streams, keep_checking
from fenliu.errors import ConfigError, quoted
from fenliu.hotlines.linkage import DEFAULT_STATUS_WORDS, ORDER_STATUSES
from fenliu.hotlines.masking import mask_number
from fenliu.hotlines.signing import SignatureError, secret_from_env, verify
from fenliu.router.rules import RuleListError, rules_text
from fenliu.service.controls import SWITCHES, CentreControls
from fenliu.service.metrics import CONTENT_TYPE_LATEST, Metrics
from fenliu.service.supervisor import Supervisor
from fenliu.settings import ConsoleSettings, Settings, target_label
from fenliu.sip import protocol as P
from fenliu.store.db import Database
from fenliu.store.record import Store

log = logging.getLogger("fenliu.api")

SUPERVISOR = web.AppKey("supervisor", Supervisor)
BUS = web.AppKey("bus", EventBus)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", Store)
ACCOUNTS = web.AppKey("accounts", Accounts)
FEED = web.AppKey("feed", EventFeed)
CONSOLE = web.AppKey("console", ConsoleSettings)
SETTINGS = web.AppKey("settings", Settings)
HOSTS = web.AppKey("hosts", frozenset)
CENTRE = web.AppKey("centre", Centre)  # only on an instance that shares a centre view (PostgreSQL store)
WAKE: web.AppKey[Callable[[], None]] = web.AppKey("wake_outbox")
DRAIN: web.AppKey[Callable[[], None]] = web.AppKey("drain")
# the loop's ticks (monotonic, kept by _loop_watch): [last tick, end of the last stall, its length]. A request
# read just after the loop was held up (a slow disk, a lock) may have waited that long in the socket: its key
# is refused rather than run late (transfer.max_command_age)
LOOP_TICK: web.AppKey[list[float]] = web.AppKey("loop_tick")
HELD = web.RequestKey("held", float)  # how long this request may have waited for the loop  # `fenliu serve` drains and stops (SIGTERM's path)  # wakes the outbox (a no-op without one)

USER = web.RequestKey("user", User)
CREDENTIAL = web.RequestKey("credential", str)  # auth.credential_of: which session or token
STREAM = web.RequestKey("stream", web.WebSocketResponse)
SESSION_COOKIE = "fenliu_session"
MAX_DEPTH = 32
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
STATIC = resources.files("fenliu.console").joinpath("static")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Access:
    role: str | None  # None: public


PUBLIC = Access(None)
OPERATOR, SUPERVISOR_ROLE, ADMIN = Access("operator"), Access("supervisor"), Access("admin")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def create_app(supervisor: Supervisor, store: Store, feed: EventFeed, accounts: Accounts,
               metrics: Metrics | None = None) -> web.Application:
    """``feed`` must be subscribed to the supervisor's bus (``console.server.Console`` builds all three)."""
    settings = supervisor.settings
    c = settings.console
    app = web.Application(middlewares=[guard], client_max_size=c.max_body_kb * 1024)
    app[SUPERVISOR] = supervisor
    app[BUS] = supervisor.bus
    app[METRICS] = metrics or Metrics(supervisor)
    app[STORE] = store
    app[ACCOUNTS] = accounts
    app[FEED] = feed
    app[CONSOLE] = c
    app[HOSTS] = _allowed_hosts(c)
    app[SETTINGS] = settings
    app[WAKE] = lambda: None
    drain_only: Callable[[], None] = partial(_drain_only, supervisor)
    app[DRAIN] = drain_only
    app[LOOP_TICK] = [time.monotonic(), 0.0, 0.0]
    r = app.router
    for method, path, handler, _access in ROUTES:
        r.add_route(method, path, handler)
    r.add_get("/", index)
    r.add_get("/static/{name}", static)
    app.cleanup_ctx.append(_loop_watch)
    app.cleanup_ctx.append(_stream_guard)
    app.cleanup_ctx.append(_controls_watch)
    return app


def loop_held(tick: list[float], now: float) -> float:
    """How long a request beginning now may have waited for the loop: the loop has not ticked for
    that long, or it was held up just before (a request read within a second of a stall may have
    arrived at its start)."""
    recent_stall = tick[2] if now - tick[1] < 1.0 else 0.0
    return max(now - tick[0], recent_stall)


async def _loop_watch(app: web.Application) -> Any:
    tick = app[LOOP_TICK]

    async def run() -> None:
        while True:
            now = time.monotonic()
            if now - tick[0] > 0.5:  # the loop was held up: what it reads next may have waited this long
                tick[1], tick[2] = now, now - tick[0]
            tick[0] = now
            await asyncio.sleep(0.05)

    task = asyncio.ensure_future(run())
    yield
    task.cancel()


async def _stream_guard(app: web.Application) -> Any:
    """Closes the event streams of sessions and tokens that have ended (``console.streams``)."""
    task = asyncio.ensure_future(guard_streams(app[FEED], app[ACCOUNTS]))
    yield
    task.cancel()


# -- the guard: host, origin, user, CSRF, role, errors --------------------------------------------
def _route_access(request: web.Request) -> Access:
    info = request.match_info
    if info.http_exception is not None:
        return PUBLIC  # 404/405: nothing to protect, answer as JSON
    path = info.route.resource.canonical if info.route.resource else ""
    if path in ("/", "/static/{name}"):
        return PUBLIC
    method = "GET" if request.method == "HEAD" else request.method
    return ACCESS.get((method, path), ADMIN)  # anything not listed needs the highest role


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[HELD] = loop_held(request.app[LOOP_TICK], time.monotonic())  # first, before anything can wait
    try:
        _check_host(request)
        _check_origin(request)
        access = _route_access(request)
        if request.match_info.http_exception is not None:
            raise request.match_info.http_exception
        if access.role is not None:
            user = await _authenticate(request)
            if not user.at_least(access.role):
                raise ApiError(403, "forbidden_role", f"需要{ROLE_NAMES[access.role]}权限 / needs role {access.role} "
                                                      f"(you are {user.role})")
        response = await handler(request)
    except (ApiError, AuthError) as e:
        response = error(e.status, e.code, e.message)
        if isinstance(e, AuthError) and e.retry_after:
            response.headers["Retry-After"] = str(int(e.retry_after))
    except web.HTTPRequestEntityTooLarge:
        response = error(413, "too_large", f"请求体过大 / body larger than {request.app[CONSOLE].max_body_kb} KB")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = error(e.status, "not_found" if e.status == 404 else "http", f"{e.status} {e.reason}")
    except Exception as e:
        down = request.app[STORE].db.unavailable(e)  # a PostgreSQL restart, a locked SQLite: said, no traceback
        if down:
            log.warning("store unavailable on %s %s: %s", request.method, request.path, e)
        else:
            log.exception("API error on %s %s", request.method, request.path)
        if isinstance(request.get(STREAM), web.WebSocketResponse):
            return request[STREAM]  # already talking WebSocket: nothing else can be sent
        response = error(503, "store_unavailable", "数据库暂时不可用，实时通话与一键转接照常，历史与统计请稍后再查 / the "
                                                   "store is unavailable just now (live calls and the one key go on); "
                                                   "try again shortly") if down else \
            error(500, "internal", "服务内部错误，已记录日志 / internal error, logged")
    if not isinstance(response, web.WebSocketResponse) and not response.prepared:
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("Cache-Control", "no-store")
        h.setdefault("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; "
                                                "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                                "base-uri 'none'; form-action 'self'")
    return response


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


def _allowed_hosts(c: ConsoleSettings) -> frozenset[str]:
    hosts = {"localhost", "127.0.0.1", "[::1]", c.host.lower()}
    hosts.update(h.strip().lower() for h in c.public_host.split(",") if h.strip())
    return frozenset(hosts)


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _check_host(request: web.Request) -> None:
    """DNS rebinding: a page on another name that resolves here must not reach the API. The
    platforms' webhooks come by whatever name their network uses and carry an HMAC instead."""
    if request.path.startswith("/api/hooks/"):
        return
    if _host_name(request.host) not in request.app[HOSTS]:
        raise ApiError(403, "bad_host", f"不接受的 Host / Host {quoted(request.host)!r} is not this server; "
                                        f"add it to console.public_host")


def _check_origin(request: web.Request) -> None:
    """A browser request from another site (Origin, or Sec-Fetch-Site) is refused outright."""
    origin = request.headers.get("Origin")
    if origin is not None:
        expected = {f"{request.scheme}://{request.host}".lower()}
        if request.app[CONSOLE].behind_proxy:
            expected.add(f"https://{request.host}".lower())
        if origin.lower() not in expected:
            raise ApiError(403, "bad_origin", f"跨站请求被拒绝 / cross-site request refused (Origin {quoted(origin)})")
    elif request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise ApiError(403, "bad_origin", "跨站请求被拒绝 / cross-site request refused")


async def _authenticate(request: web.Request) -> User:
    accounts = request.app[ACCOUNTS]
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "bad_token", "Authorization 须为 Bearer 令牌 / use Authorization: Bearer <token>")
        user = accounts.token_user(token.strip())
        request[CREDENTIAL] = credential_of(token=token.strip())
    else:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid:
            raise ApiError(401, "unauthenticated", "请先登录 / log in first (or send an API token)")
        user, csrf = accounts.session_user(sid)
        request[CREDENTIAL] = credential_of(session_id=sid)
        if request.method in UNSAFE:
            sent = request.headers.get("X-CSRF-Token", "")
            if not sent or not hmac.compare_digest(sent, csrf):
                raise ApiError(403, "csrf", "缺少或错误的 CSRF 令牌 / missing or wrong X-CSRF-Token header; "
                                            "reload the console")
    request[USER] = user
    return user


def _user(request: web.Request) -> User:
    return request[USER]


# -- bodies -------------------------------------------------------------------------------------
def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when arrays/objects nest deeper than ``limit`` (checked before parsing: a deep
    document would otherwise exhaust the parser's recursion)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


async def body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:  # (not can_read_body: false once read, e.g. after a signature check)
        return {}
    if request.content_type != "application/json":
        raise ApiError(415, "bad_content_type", "请求体须为 application/json / send Content-Type: application/json")
    raw = await request.read()  # bounded by client_max_size: 413 beyond
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_json", "请求体不是 UTF-8 / body is not UTF-8") from None
    if json_depth_exceeds(text, MAX_DEPTH):
        raise ApiError(400, "too_deep", f"JSON 嵌套过深 / JSON nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, "bad_json", f"请求体不是合法 JSON / body is not JSON: {quoted(str(e))}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "请求体须是 JSON 对象 / body must be a JSON object")
    return data


def field_str(data: dict[str, Any], key: str, *, required: bool = False, max_len: int = 200) -> str:
    v = data.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v) or len(v) > max_len:
        raise ApiError(400, "bad_field", f"字段 {key} 须是不超过 {max_len} 字的字符串 / {key} must be a string of "
                                         f"at most {max_len} characters (got {quoted(v)})")
    return v


def wait_seconds(data: dict[str, Any]) -> float:
    w = data.get("wait", 0)
    if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 300:
        raise ApiError(400, "bad_field", f"wait 须是 0..300 秒 / wait must be 0..300 seconds (got {quoted(w)})")
    return float(w)


def query_int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    v = request.query.get(key)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        n = lo - 1
    if not lo <= n <= hi:
        raise ApiError(400, "bad_field", f"{key} 须是 {lo}..{hi} 的整数 / {key} must be an integer {lo}..{hi}")
    return n


# -- static console -------------------------------------------------------------------------------
async def index(request: web.Request) -> web.StreamResponse:
    return web.Response(body=STATIC.joinpath("index.html").read_bytes(), content_type="text/html", charset="utf-8")


CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png",
                 ".svg": "image/svg+xml", ".ico": "image/x-icon"}


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    ext = Path(name).suffix
    item = STATIC.joinpath(name)
    if "/" in name or name.startswith(".") or ext not in CONTENT_TYPES or not item.is_file():
        raise ApiError(404, "not_found", "没有这个文件 / no such file")
    return web.Response(body=item.read_bytes(), content_type=CONTENT_TYPES[ext],
                        charset="utf-8" if ext in (".js", ".css", ".html", ".svg") else None)


# -- accounts -----------------------------------------------------------------------------------
def _user_json(u: User) -> dict[str, Any]:
    return {"name": u.name, "role": u.role, "role_name": ROLE_NAMES[u.role], "seat": u.seat}


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[CONSOLE].behind_proxy


async def login(request: web.Request) -> web.StreamResponse:
    data = await body(request)
    name = field_str(data, "username", required=True, max_len=64)
    password = field_str(data, "password", required=True, max_len=1024)
    store, address = request.app[STORE], _client_address(request)
    try:
        # argon2 takes ~0.2 s of CPU on purpose: off the loop, so that no console's events wait for it
        user, sid, csrf = await asyncio.get_running_loop().run_in_executor(
            None, request.app[ACCOUNTS].login, name, password, address)
    except AuthError as e:
        store.audit(name, "login", outcome=e.code, detail={"address": address})
        for burst in e.bursts:  # many wrong passwords for one account or from one address: supervisors hear of it
            kind, _, who = burst.partition(":")
            what = f"账户 {who}" if kind == "account" else f"地址 {who}"
            store.raise_alert("login_burst", f"{burst}@{int(time.time() // 900)}",
                              f"{what} 15 分钟内多次登录失败，可能在猜测密码 / repeated failed logins for {kind} {who}")
        if e.delay:
            await asyncio.sleep(e.delay)  # the tarpit: a wrong password is answered later, a right one at once
        raise
    store.audit(user.name, "login", outcome="ok", detail={"address": address})
    resp = web.json_response({"user": _user_json(user), "csrf": csrf})
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Strict", secure=_secure(request), path="/")
    return resp


def _client_address(request: web.Request) -> str:
    """The browser's address; behind a reverse proxy, the one the proxy reports (else every
    console would share the proxy's address, and one person's wrong passwords lock all out)."""
    if request.app[CONSOLE].behind_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded[:64]
    return request.remote or ""


async def logout(request: web.Request) -> web.StreamResponse:
    sid = request.cookies.get(SESSION_COOKIE, "")
    request.app[ACCOUNTS].logout(sid)
    request.app[FEED].end_streams(request[CREDENTIAL], "logged_out")  # this instance's at once
    request.app[STORE].audit(_user(request).name, "logout", outcome="ok")
    resp = web.json_response({"ok": True})
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


async def me(request: web.Request) -> web.StreamResponse:
    user = _user(request)
    csrf = ""
    if user.via == "session":
        _, csrf = request.app[ACCOUNTS].session_user(request.cookies.get(SESSION_COOKIE, ""))
    return web.json_response({"user": _user_json(user), "csrf": csrf})


# -- calls --------------------------------------------------------------------------------------
def _visible_call(request: web.Request, call_id: str) -> None:
    """404 for a call this operator may not see (no hint that it exists): the live view's rule,
    or, for a call the live view no longer holds, the seat its record says answered it."""
    feed, user = request.app[FEED], _user(request)
    if feed.visible_to(user, call_id):
        return
    row = request.app[STORE].call(call_id)
    if row is not None and row.get("seat") and user.seat and row["seat"] == user.seat:
        return
    raise ApiError(404, "no_such_call", f"没有这通电话 / no call {quoted(call_id)!r}")


def _masked(request: web.Request, remote: str | None) -> str:
    remote = remote or ""
    return remote if _user(request).sees_full_numbers else mask_number(remote)


async def calls(request: web.Request) -> web.StreamResponse:
    sup, feed, user = request.app[SUPERVISOR], request.app[FEED], _user(request)
    out = []
    for c in [*sup.calls(), *_remote_calls(request.app)]:
        if not feed.visible_to(user, c["call_id"]):
            continue
        seat = feed.seat_of(c["call_id"])
        out.append({"instance": feed.instance, "instance_up": True, **c, "remote": _masked(request, c["remote"]),
                    "seat": seat, **_live_view(feed, c)})
    return web.json_response({"calls": out, "last_event_id": feed.last_id,
                              "controls": request.app[SUPERVISOR].controls.to_dict()})


def _remote_calls(app: web.Application) -> list[dict[str, Any]]:
    """The live calls other instances of the centre hold, as the store's event stream tells them
    (``instance_up``: its instance's heartbeat is current, so its keys can reach it)."""
    centre = app.get(CENTRE)
    if centre is None:
        return []
    return [{"call_id": cid, "worker": lc.worker, "slot": None, "remote": lc.remote, "since": lc.since,
             "state": lc.state or "ringing", "transfer": None, "degraded": False, "dropped_frames": 0,
             "instance": lc.instance,
             "instance_up": centre.peers.get(lc.instance, 0.0) <= centre.dead_after}  # (new: not seen yet)
            for cid, lc in app[FEED].remote_calls()]


def _live_view(feed: EventFeed, c: dict[str, Any]) -> dict[str, Any]:
    """What the event stream has folded into a live call (state, transfer, latest decision) and
    the event id it is current to; the supervisor's own state until the first event."""
    lc = feed.live.get(c["call_id"])
    if lc is None:
        return {"state": c["state"], "transfer": None, "decision": None, "repeat": None, "ivr": None,
                "last_event_id": feed.last_id}
    return {"state": lc.state or c["state"], "transfer": lc.transfer, "decision": lc.decision,
            "repeat": lc.repeat, "ivr": lc.ivr, "last_event_id": lc.last_event_id}


async def call_detail(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    _visible_call(request, call_id)
    sup, store, feed = request.app[SUPERVISOR], request.app[STORE], request.app[FEED]
    live = next((c for c in [*sup.calls(), *_remote_calls(request.app)] if c["call_id"] == call_id), None)
    row = store.call(call_id)
    if live is None and row is None:
        raise ApiError(404, "no_such_call", f"没有这通电话 / no call {quoted(call_id)!r}")
    events = store.events(call_id)
    utterances = [{"leg": e["leg"], "utterance_id": e["utterance_id"], "text": e["text"], "t0": e["t0"],
                   "t1": e["t1"], "at": e["at"], "source": e.get("source", "asr")}
                  for e in events if e["kind"] == "FinalTranscript"]
    decisions = [{k: v for k, v in e.items() if k not in ("kind", "type")} for e in events
                 if e["kind"] == "Decision"]
    transfers = [{k: v for k, v in e.items() if k not in ("event",)} for e in events
                 if e["kind"].startswith("transfer_")]
    call: dict[str, Any] = dict(row or {})
    if live is not None:
        call.update(live)
        call.update(_live_view(feed, live))
    else:
        call["last_event_id"] = feed.last_id
    call["remote"] = _masked(request, call.get("remote"))
    call.pop("text", None)
    return web.json_response({"call": call, "utterances": utterances, "decisions": decisions,
                              "transfers": transfers, "live": live is not None})


def _date(value: str, key: str, end: bool) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "bad_field", f"{key} 须为 YYYY-MM-DD 或 Unix 秒 / {key}: a date YYYY-MM-DD or unix "
                                         f"seconds (got {quoted(value)})") from None
    if end:
        day += dt.timedelta(days=1)  # "to" includes that whole day
    return dt.datetime.combine(day, dt.time()).timestamp()


async def history(request: web.Request) -> web.StreamResponse:
    q, user = request.query, _user(request)
    for k in ("q", "number", "category", "target"):
        if len(q.get(k, "")) > 100:
            raise ApiError(400, "bad_field", f"{k} 过长 / {k}: at most 100 characters")
    rows, total = request.app[STORE].history(
        q=q.get("q", ""), number=q.get("number", ""), category=q.get("category", ""), target=q.get("target", ""),
        since=_date(q.get("from", ""), "from", False), until=_date(q.get("to", ""), "to", True),
        seat=None if user.at_least("supervisor") or not user.seat else user.seat,
        limit=query_int(request, "limit", 50, 1, 500), offset=query_int(request, "offset", 0, 0, 10**7))
    for r in rows:
        r["remote"] = _masked(request, r["remote"])
        r["text"] = (r["text"] or "")[:300]
    return web.json_response({"calls": rows, "total": total})


# -- the keys -----------------------------------------------------------------------------------
def _transfer_outcome(f: P.Fact) -> bool:
    return isinstance(f, P.TransferUpdate) and f.step in (P.TransferStep.BRIDGED, P.TransferStep.COMPLETED,
                                                          P.TransferStep.FAILED)


def _final_or_error(f: P.Fact) -> bool:
    return (isinstance(f, P.TransferUpdate) and f.final) or isinstance(f, P.WorkerError)


def _completed_or_error(f: P.Fact) -> bool:
    return (isinstance(f, P.TransferUpdate) and f.step == P.TransferStep.COMPLETED) or isinstance(f, P.WorkerError)


# a key: what it asks the supervisor to do, and the fact that is its outcome. The same table runs a
# key pressed here and one carried from another instance's console (fenliu.console.centre)
KEYS: dict[str, tuple[Callable[[Supervisor, str, dict[str, Any]], dict[str, Any]], Callable[[P.Fact], bool]]] = {
    "transfer": (lambda s, cid, a: s.transfer(cid, a["target"], a.get("mode"), bool(a.get("allow_raw"))),
                 _transfer_outcome),
    "cancel_transfer": (lambda s, cid, a: s.cancel_transfer(cid), _final_or_error),
    "release": (lambda s, cid, a: s.release_operator(cid), _completed_or_error),
    "hangup": (lambda s, cid, a: s.hangup(cid), lambda f: isinstance(f, P.CallEnded)),
}


async def _act(request: web.Request, action: str, args: dict[str, Any], wait: float,
               detail: dict[str, Any]) -> web.StreamResponse:
    """A key for a call this operator may see: run here when this instance holds the call, else
    carried to the instance that does (the centre view) — the answer is the same either way."""
    call_id = request.match_info["call_id"]
    _visible_call(request, call_id)
    app, user = request.app, _user(request)
    held, limit = request.get(HELD, 0.0), app[SETTINGS].transfer.max_command_age
    if held > limit:  # the key waited while the service was held up: the operator decides again
        app[STORE].audit(user.name, action, call_id, outcome="too_late", detail={**detail, "held_s": round(held, 1)})
        raise ApiError(503, "too_late", f"这一键在服务器上等待了 {held:.0f} 秒，未执行，请确认后重按 / the key waited "
                                        f"{held:.0f} s before the service could run it (over transfer.max_command_age "
                                        f"{limit:g} s): not executed; check the call and press again")
    owner = _owner(app, call_id)
    if owner:
        try:
            status, out = await app[CENTRE].send_command(owner, call_id, action, {"args": args, "wait": wait,
                                                                                  "detail": detail}, user.name, wait)
        except CentreUnavailable as e:
            app[STORE].audit(user.name, action, call_id, outcome=e.code, detail={**detail, "instance": owner})
            raise ApiError(e.status, e.code, str(e)) from None
        return web.json_response(out, status=status)
    status, out = await perform_key(app, user.name, action, call_id, args, wait, detail)
    return web.json_response(out, status=status)


def _owner(app: web.Application, call_id: str) -> str:
    """The other instance that holds this live call ("" when it is this instance's, or unknown)."""
    centre = app.get(CENTRE)
    if centre is None:
        return ""
    lc = app[FEED].live.get(call_id)
    return lc.instance if lc is not None and lc.instance and lc.instance != centre.instance else ""


async def run_carried(app: web.Application, cmd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A key another instance's console carried here (``Centre.executor``); its API checked who
    may press it and for which call."""
    a = cmd["args"]
    detail = {**a.get("detail", {}), "via": cmd["via"]}
    wait = min(float(a.get("wait") or 0.0), max(float(cmd.get("left_s") or 0.0) - 1.0, 0.0))
    try:
        return await perform_key(app, str(cmd["by_user"]), str(cmd["action"]), str(cmd["call_id"]),
                                 a.get("args", {}), wait, detail)
    except ApiError as e:
        return e.status, {"error": e.message, "code": e.code}


async def perform_key(app: web.Application, user_name: str, action: str, call_id: str, args: dict[str, Any],
                      wait: float, detail: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run a key on this instance; with ``wait``, answer with the first outcome fact. Every key is
    written to the audit log with its outcome, and noted on the event stream so that other
    consoles watching the call see who pressed what."""
    if action not in KEYS:
        raise ApiError(400, "bad_field", f"unknown key {quoted(action)!r}")
    act, outcome = KEYS[action]
    sup, bus, store = app[SUPERVISOR], app[BUS], app[STORE]
    box: dict[str, str] = {}

    def matches(item: Item) -> bool:
        return isinstance(item, WorkerFact) and item.call_id == box.get("call_id") and outcome(item.fact)

    waiter = asyncio.ensure_future(bus.next(matches, wait)) if wait else None
    await asyncio.sleep(0)  # the waiter is subscribed before anything can happen
    try:
        try:
            result = act(sup, call_id, args)
        except LookupError as e:
            row = store.call(call_id)
            if row is not None and row["ended_at"] is not None:
                raise ApiError(409, "call_ended", f"通话已结束 / call {quoted(call_id)} has ended") from e
            raise ApiError(404, "no_such_call", f"没有这通电话 / {quoted(str(e))}") from e
        except PermissionError as e:
            raise ApiError(403, "target_not_allowed", str(e)[:300]) from e
        except ValueError as e:
            raise ApiError(400, "bad_field", str(e)[:300]) from e
    except ApiError as e:
        if waiter is not None:
            waiter.cancel()
        store.audit(user_name, action, call_id, outcome=e.code, detail=detail)
        raise
    box["call_id"] = result["call_id"]
    app[FEED].note("operator_action", result["call_id"], {"action": action, "by": user_name, **detail})
    if waiter is None:
        store.audit(user_name, action, result["call_id"], outcome="requested", detail=detail)
        return 202, result
    try:
        item = await waiter
    except TimeoutError:
        store.audit(user_name, action, result["call_id"], outcome="timeout", detail=detail)
        return 504, {**result, "status": "timeout", "code": "timeout",
                     "error": f"{wait:.0f} 秒内没有结果 / no outcome within {wait:.0f} s"}
    fact = item.fact  # type: ignore[union-attr]
    ok = not (isinstance(fact, P.TransferUpdate) and fact.step == P.TransferStep.FAILED) \
        and not isinstance(fact, P.WorkerError)
    out = {"status": item.kind, "reason": getattr(fact, "reason", "") or getattr(fact, "message", ""),
           "sip_status": getattr(fact, "status", 0)}
    store.audit(user_name, action, result["call_id"], outcome=item.kind, detail={**detail, **out})
    return 200 if ok else 502, {**result, **out}


def raw_uri_allowed(settings: Settings, user: User, target: str) -> bool:
    """May this user send a caller to this SIP address that is no configured target? Only when the
    deployment lists a pattern for it (transfer.allow_uris) and the user has the role it names."""
    t = settings.transfer
    patterns = [x.strip() for x in t.allow_uris.split(",") if x.strip()]
    return bool(patterns) and user.at_least(t.allow_uris_role) and any(fnmatch.fnmatchcase(target, p) for p in patterns)


async def transfer(request: web.Request) -> web.StreamResponse:
    data = await body(request)
    target = field_str(data, "target", required=True, max_len=300)
    mode = field_str(data, "mode", max_len=20) or None
    allow_raw = raw_uri_allowed(request.app[SETTINGS], _user(request), target)
    return await _act(request, "transfer", {"target": target, "mode": mode, "allow_raw": allow_raw},
                      wait_seconds(data), {"target": target, "mode": mode or request.app[SETTINGS].transfer.mode})


async def cancel_transfer(request: web.Request) -> web.StreamResponse:
    return await _act(request, "cancel_transfer", {}, wait_seconds(await body(request)), {})


async def release_operator(request: web.Request) -> web.StreamResponse:
    return await _act(request, "release", {}, wait_seconds(await body(request)), {})


async def hangup(request: web.Request) -> web.StreamResponse:
    return await _act(request, "hangup", {}, wait_seconds(await body(request)), {})


# -- configuration, the negative list, audit -------------------------------------------------------
async def config(request: web.Request) -> web.StreamResponse:
    settings, sup = request.app[SETTINGS], request.app[SUPERVISOR]
    t = settings.transfer
    urgent = [x.strip() for x in t.urgent.split(",") if x.strip()]
    named = sup.router.rules.targets
    targets = []
    for tid in t.targets:
        # [transfer.names]: the one table the console, the IVR and the SMS texts share; a target it does
        # not name (a deployment's own) takes the negative list's name, else its id
        number, name = target_label(t, tid)
        if not name:
            name = getattr(named.get(tid), "name", "") or tid
        targets.append({"id": tid, "name": name, "number": number, "urgent": tid in urgent})
    links = {group: tid for group, tid in t.links.items() if tid in t.targets}
    return web.json_response({"targets": targets, "links": links, "modes": ["three-way", "refer", "attended"],
                              "default_mode": t.mode, "rule_version": sup.router.rules.version,
                              "timezone": settings.store.timezone, "controls": sup.controls.to_dict(),
                              "user": _user_json(_user(request))})


async def controls_view(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[SUPERVISOR].controls.to_dict())


async def controls_set(request: web.Request) -> web.StreamResponse:
    """A duty supervisor stops or resumes diversion suggestions / the IVR's offers for the whole
    centre (every instance on the store follows within a second); audited."""
    data = await body(request)
    user, store, sup = _user(request), request.app[STORE], request.app[SUPERVISOR]
    changes = {k: data[k] for k in SWITCHES if k in data}
    if not changes or any(not isinstance(v, bool) for v in changes.values()) or set(data) - set(SWITCHES):
        raise ApiError(400, "bad_field", f"须为 {{{', '.join(SWITCHES)}}} 中的 true/false / send one or more of "
                                         f"{', '.join(SWITCHES)} as true or false")
    now = time.time()
    current = sup.controls
    for name, on in changes.items():
        await asyncio.to_thread(store.set_control, name, "1" if on else "0", user.name)
        current = current.with_switch(name, on, user.name, now)
    store.audit(user.name, "centre_control", None, "ok", changes)
    _apply_controls(request.app, current)
    return web.json_response(current.to_dict())


def _apply_controls(app: web.Application, controls: CentreControls) -> None:
    """This instance follows the switches at once, and tells every console when one changed."""
    sup = app[SUPERVISOR]
    changed = (controls.suggestions_paused, controls.ivr_offers_paused) != (sup.controls.suggestions_paused,
                                                                            sup.controls.ivr_offers_paused)
    sup.controls = controls
    if changed:
        app[FEED].note("centre_controls", "", controls.to_dict())


async def _controls_watch(app: web.Application) -> Any:
    """Follows the switches other instances throw (the store is the one place they live)."""
    async def follow() -> None:
        _apply_controls(app, CentreControls.from_rows(await asyncio.to_thread(app[STORE].controls)))

    task = asyncio.ensure_future(keep_checking(follow, "centre controls not re-read"))
    yield
    task.cancel()


def _rules_path(request: web.Request) -> str:
    return request.app[SETTINGS].router.rules_path


async def negative_list(request: web.Request) -> web.StreamResponse:
    rules = request.app[SUPERVISOR].router.rules
    path = _rules_path(request)
    text = _list_text(path)
    if path and not _user(request).at_least("supervisor"):
        path = "(服务器上的清单文件 / the server's list file)"  # operators see the version, not server paths
    return web.json_response({"version": rules.version, "name": rules.name, "path": path or "(fenliu 自带 / shipped)",
                              "categories": len(rules.categories), "danger_groups": len(rules.danger),
                              "editable": bool(path), "text": text})


def _clip(message: str, quoted: int = 64) -> str:
    """A rule-list error names file:line and quotes the offending text: keep the quotes short."""
    pattern = r"([\"'「])([^\"'」]{" + str(quoted + 1) + r",})([\"'」])"
    return re.sub(pattern, lambda m: m.group(1) + m.group(2)[:quoted] + "…" + m.group(3), message)[:600]


def _list_text(path: str) -> str:
    try:
        return rules_text(path or None)[0]
    except RuleListError:
        return ""  # the file went missing since the list was loaded: the loaded list is still shown


async def _reload(request: web.Request, text: str | None) -> web.StreamResponse:
    sup, store, user = request.app[SUPERVISOR], request.app[STORE], _user(request)
    action = "list_edit" if text is not None else "list_reload"
    try:
        version, previous = sup.reload_rules(text)
    except (RuleListError, ConfigError) as e:
        store.audit(user.name, action, outcome="bad_rules", detail={"error": str(e)[:500]})
        raise ApiError(422, "bad_rules", f"{_clip(str(e))}（原清单仍在使用 / the previous list stays active）") from e
    except RuntimeError as e:
        store.audit(user.name, action, outcome="refused", detail={"error": str(e)})
        raise ApiError(409, "not_reloadable", str(e)) from e
    store.audit(user.name, action, outcome="ok", detail={"version": version, "previous": previous})
    request.app[FEED].note("negative_list_reloaded", "", {"version": version, "previous": previous, "by": user.name})
    return web.json_response({"version": version, "previous": previous})


async def reload_list(request: web.Request) -> web.StreamResponse:
    await body(request)
    return await _reload(request, None)


async def put_list(request: web.Request) -> web.StreamResponse:
    data = await body(request)
    return await _reload(request, field_str(data, "text", required=True, max_len=2_000_000))


async def audit(request: web.Request) -> web.StreamResponse:
    rows = request.app[STORE].audit_log(query_int(request, "limit", 100, 1, 1000),
                                        request.query.get("action", "")[:40])
    return web.json_response({"audit": rows})


async def users(request: web.Request) -> web.StreamResponse:
    return web.json_response({"users": request.app[STORE].users()})


async def add_user(request: web.Request) -> web.StreamResponse:
    data = await body(request)
    try:
        u = request.app[ACCOUNTS].add_user(field_str(data, "name", required=True, max_len=64),
                                           field_str(data, "role", required=True, max_len=20),
                                           field_str(data, "password", required=True, max_len=1024),
                                           field_str(data, "seat", max_len=64))
    except ValueError as e:
        raise ApiError(400, "bad_field", str(e)) from e
    request.app[STORE].audit(_user(request).name, "user_add", outcome="ok", detail={"name": u.name, "role": u.role})
    return web.json_response({"user": _user_json(u)}, status=201)


# -- health, metrics, openapi ----------------------------------------------------------------------
async def health(request: web.Request) -> web.StreamResponse:
    """Up or down for anybody (a load balancer, a monitoring probe); the workers, processes and
    live-call counts only for a supervisor's session or token (fenliu doctor, dashboards)."""
    h = request.app[SUPERVISOR].health()
    status = 200 if h["ok"] else 503
    user = await _optional_user(request)
    if user is None or not user.at_least("supervisor"):
        return web.json_response({"ok": h["ok"], "status": "up" if h["ok"] else "down"}, status=status)
    centre = request.app.get(CENTRE)
    if centre is not None:  # the centre view: who this is, the others' heartbeats, whether the store takes events
        h["centre"] = {"instance": centre.instance, "peers": {k: round(v, 1) for k, v in centre.peers.items()},
                       "numbering_locally": centre.local_mode, "last_error": centre.last_error, **centre.stats}
    return web.json_response(h, status=status)


async def _optional_user(request: web.Request) -> User | None:
    """The user if the request carries valid credentials, else None (no error: a public route)."""
    if not request.headers.get("Authorization") and not request.cookies.get(SESSION_COOKIE):
        return None
    try:
        return await _authenticate(request)
    except (ApiError, AuthError):
        return None


async def ready(request: web.Request) -> web.StreamResponse:
    sup = request.app[SUPERVISOR]
    h = sup.health()
    warm = sup.warmed.is_set() or sup.engine is None or sup.mode == "processes"
    store_up = await _store_answers(request.app[STORE])
    ok = h["ok"] and warm and not sup.draining and store_up
    why = "" if ok else ("draining: no new calls" if sup.draining else "workers not all alive" if not h["ok"]
                         else "recognisers still warming up" if not warm
                         else "store unavailable: records wait in memory and the journal")
    return web.json_response({"ready": ok, "why": why}, status=200 if ok else 503)


async def _store_answers(store: Store) -> bool:
    """Does the store answer now (a read within 2 s, off the loop), with nothing waiting for it?"""
    try:
        await asyncio.wait_for(asyncio.to_thread(store.db.scalar, "SELECT 1"), 2.0)
    except Exception:  # noqa: BLE001 - down, locked, slow: not ready
        return False
    return store.waiting == 0  # (the outbox's round and each new record write what waits)


async def metrics_view(request: web.Request) -> web.StreamResponse:
    token = request.app[CONSOLE].metrics_token
    auth = request.headers.get("Authorization", "")
    if token:
        if not hmac.compare_digest(auth.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "bad_token", "/metrics 需要 console.metrics_token / needs the metrics bearer token")
    elif not _loopback(request.remote):
        raise ApiError(403, "forbidden", "/metrics 只对本机开放 / loopback only; set console.metrics_token to "
                                         "allow a remote Prometheus")
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


async def openapi(request: web.Request) -> web.StreamResponse:
    from fenliu.console.openapi import describe

    return web.json_response(describe(ROUTES))


# -- the event stream -----------------------------------------------------------------------------
async def events(request: web.Request) -> web.StreamResponse:
    feed, user = request.app[FEED], _user(request)
    since_raw = request.query.get("since")
    since: int | None = None
    if since_raw is not None:
        if not since_raw.isdigit() or len(since_raw) > 15:
            raise ApiError(400, "bad_field", "since 须是事件编号 / since must be an event id (integer)")
        since = int(since_raw)
    credential = request[CREDENTIAL]
    cap = request.app[CONSOLE].max_streams_per_session
    if feed.streams_of(credential) >= cap:
        raise ApiError(429, "too_many_streams", f"此会话已打开 {cap} 个事件流，请关闭多余的接警台页面 / this session "
                                                f"already has {cap} event streams open (console.max_streams_per_session)")
    # no permessage-deflate: messages are small and per-client zlib state costs more CPU than it saves
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, compress=False)
    await ws.prepare(request)
    request[STREAM] = ws
    client, hello, missed = feed.connect(user, since, request.query.get("server"), credential)
    ended = asyncio.ensure_future(client.ended.wait())
    try:
        await ws.send_str(json.dumps(hello, ensure_ascii=False))
        for text in missed:
            await ws.send_str(text)
        reader = asyncio.ensure_future(_drain_incoming(ws))
        while not reader.done() and not ended.done():
            if client.queue.empty():  # wait only when there is nothing to send
                getter = asyncio.ensure_future(client.queue.get())
                done, _ = await asyncio.wait({getter, reader, ended}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await ws.send_str(getter.result())
                feed.sent += 1
            while not client.queue.empty() and not ended.done():  # then everything already queued
                await ws.send_str(client.queue.get_nowait())
                feed.sent += 1
            if client.overflowed and client.queue.empty():
                await ws.close(code=1013, message=b"fell behind: reconnect with ?since=<last id>")
                break
        if ended.done():  # its session or token ended: nothing more of the calls goes out on it
            await ws.close(code=client.close_code, message=client.end_reason.encode())
        reader.cancel()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        ended.cancel()
        feed.disconnect(client)
        if not ws.closed:
            await ws.close()
    return ws


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """The stream is one-way: read (and ignore) what the client sends, until it closes."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


# -- closing the loop: work orders, alerts, follow-ups, figures, webhooks --------------------------
def _mask_row(request: web.Request, row: dict[str, Any], key: str = "number") -> dict[str, Any]:
    if key in row and not _user(request).sees_full_numbers:
        row[key] = mask_number(row[key] or "")
    return row


async def orders(request: web.Request) -> web.StreamResponse:
    q = request.query
    status = q.get("status", "")
    if status and status not in ORDER_STATES:
        raise ApiError(400, "bad_field", f"status 须为 {'/'.join(ORDER_STATES)} / unknown status {quoted(status)}")
    rows = request.app[STORE].orders(status=status, since=_date(q.get("from", ""), "from", False),
                                     until=_date(q.get("to", ""), "to", True),
                                     limit=query_int(request, "limit", 100, 1, 1000),
                                     offset=query_int(request, "offset", 0, 0, 10**7))
    return web.json_response({"orders": [_mask_row(request, r) for r in rows],
                              "outbox": request.app[STORE].outbox_counts()})


async def order_detail(request: web.Request) -> web.StreamResponse:
    o = request.app[STORE].order(request.match_info["order_no"])
    if o is None:
        raise ApiError(404, "no_such_order", f"没有这个工单 / no order {quoted(request.match_info['order_no'])!r}")
    _mask_row(request, o)
    if not _user(request).sees_full_numbers and "caller" in o["body"]:
        o["body"]["caller"] = mask_number(o["body"]["caller"])
    return web.json_response(o)


async def order_retry(request: web.Request) -> web.StreamResponse:
    no, user = request.match_info["order_no"], _user(request)
    data = await body(request) if request.can_read_body else {}
    note = field_str(data, "note", max_len=500)  # a returned order's correction (更正说明)
    store = request.app[STORE]
    try:
        ok = await asyncio.to_thread(store.requeue, no, time.time(), note, user.name)
    except ValueError as e:
        raise ApiError(400, "bad_field", str(e)) from None
    store.audit(user.name, "order_retry", None, "ok" if ok else "refused", {"order_no": no, "note": note[:100]})
    if not ok:
        raise ApiError(409, "not_retryable", f"工单 {quoted(no)} 不能重发：只有送达失败、待人工转交或被退回（可附更正说明）、"
                                             f"且平台已配置 URL 的工单可以重发 / only failed, local or returned orders "
                                             f"whose platform has a URL")
    request.app[WAKE]()
    return web.json_response({"order_no": no, "status": "queued"})


async def alerts(request: web.Request) -> web.StreamResponse:
    rows = request.app[STORE].alerts(open_only=request.query.get("all") != "1",
                                     limit=query_int(request, "limit", 200, 1, 1000))
    return web.json_response({"alerts": rows})


async def ack_alert(request: web.Request) -> web.StreamResponse:
    try:
        aid = int(request.match_info["alert_id"])
    except ValueError:
        raise ApiError(404, "no_such_alert", "没有这条告警 / no such alert") from None
    user = _user(request)
    if not request.app[STORE].ack_alert(aid, user.name):
        raise ApiError(404, "no_such_alert", "没有这条未处理告警 / no such open alert")
    request.app[STORE].audit(user.name, "alert_ack", None, "ok", {"alert": aid})
    request.app[FEED].note("alert_acked", "", {"id": aid, "by": user.name})  # other supervisors' lists follow
    return web.json_response({"id": aid, "acked_by": user.name})


def _drain_only(sup: Supervisor) -> None:
    """No new calls (an app without `fenliu serve` around it: nothing stops when they have ended)."""
    sup.drain("draining (requested through the API)")


async def drain(request: web.Request) -> web.StreamResponse:
    """Take this instance out of rotation (`fenliu drain`): no new calls — the front sends them to
    another instance — and `fenliu serve` stops once its live calls have ended (sip.drain_timeout
    bounds the wait). Audited."""
    user, sup = _user(request), request.app[SUPERVISOR]
    request.app[DRAIN]()
    request.app[STORE].audit(user.name, "drain", None, "ok", {"live_calls": sup.live_calls()})
    await asyncio.sleep(0)  # the drain has started (serve's waiter runs)
    return web.json_response({"draining": True, "live_calls": sup.live_calls()})


async def callbacks(request: web.Request) -> web.StreamResponse:
    """The callback list: every call fenliu ended or lost (an instance gone, a crash, a bound), with
    the caller's number and what was heard, until someone marks it called back (``?all=1``: those
    too). Operators and supervisors alike: whoever is free calls back — so the number is shown in
    full here (it is what they dial; marking one done is audited)."""
    rows = request.app[STORE].callbacks(open_only=request.query.get("all") != "1")
    return web.json_response({"callbacks": rows})


async def callback_done(request: web.Request) -> web.StreamResponse:
    try:
        cid = int(request.match_info["callback_id"])
    except ValueError:
        raise ApiError(404, "no_such_callback", "没有这条回拨 / no such callback") from None
    data = await body(request)
    note = field_str(data, "note", max_len=300)
    user = _user(request)
    if not request.app[STORE].callback_done(cid, user.name, note):
        raise ApiError(404, "no_such_callback", "没有这条待回拨 / no such open callback (already done?)")
    request.app[STORE].audit(user.name, "callback_done", None, "ok", {"callback": cid, "note": note})
    request.app[FEED].note("callbacks_changed", "", {"done": cid, "by": user.name})  # every console's list follows
    return web.json_response({"id": cid, "done_by": user.name})


async def call_loop(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    _visible_call(request, call_id)
    out = request.app[STORE].call_loop(call_id)
    if out["order"]:
        _mask_row(request, out["order"])
    for m in out["sms"]:
        _mask_row(request, m)
    return web.json_response(out)


async def add_followup(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    data = await body(request)
    side, score = data.get("side"), data.get("score")
    if side not in ("110", "hotline"):
        raise ApiError(400, "bad_field", "side 须为 \"110\" 或 \"hotline\" / side must be \"110\" or \"hotline\"")
    if isinstance(score, bool) or score not in (1, 2, 3):
        raise ApiError(400, "bad_field", "score 须为 1 满意 / 2 基本满意 / 3 不满意 / score must be 1, 2 or 3")
    note = field_str(data, "note", max_len=500)
    store, user = request.app[STORE], _user(request)
    if store.call(call_id) is None:
        raise ApiError(404, "no_such_call", f"没有这通电话 / no call {quoted(call_id)!r}")
    fid = store.add_followup(call_id, side, score, "supervisor", user.name, note)
    store.audit(user.name, "followup", call_id, "ok", {"side": side, "score": score})
    return web.json_response({"id": fid, "call_id": call_id, "side": side, "score": score}, status=201)


def _day_range(request: web.Request) -> tuple[str, str]:
    q = request.query
    today = dt.datetime.now(ZoneInfo(request.app[SETTINGS].store.timezone)).date()
    try:
        d_to = dt.date.fromisoformat(q["to"]) if q.get("to") else today
        d_from = dt.date.fromisoformat(q["from"]) if q.get("from") else d_to - dt.timedelta(days=29)
    except ValueError:
        raise ApiError(400, "bad_field", "from/to 须为 YYYY-MM-DD / from and to are dates YYYY-MM-DD") from None
    if d_from > d_to or (d_to - d_from).days > 3660:
        raise ApiError(400, "bad_field", "日期范围无效（最多十年）/ from must not be after to; at most ten years")
    return d_from.isoformat(), d_to.isoformat()


def _read(request: web.Request, query: Callable[..., Any], *args: Any) -> Any:
    """A long read (a year's figures, leads) on its own connection, in a worker thread: the
    store's connection, which records live calls on the loop, is never held for seconds."""
    db = Database(request.app[STORE].url)
    try:
        return query(db, *args)
    finally:
        db.close()


def _figures(request: web.Request, figures: Callable[..., Any]) -> Callable[..., Any]:
    """stats.figures with this deployment's urgent targets and [transfer.names]."""
    t = request.app[SETTINGS].transfer
    urgent = {x.strip() for x in t.urgent.split(",") if x.strip()}
    return lambda db, *args: figures(db, *args, urgent=urgent, names=t.names)


async def stats_view(request: web.Request) -> web.StreamResponse:
    from fenliu.loop import stats  # scikit-learn and openpyxl load only when asked

    d_from, d_to = _day_range(request)
    figs = await asyncio.to_thread(_read, request, _figures(request, stats.figures), d_from, d_to)
    return web.json_response(figs)


async def stats_export(request: web.Request) -> web.StreamResponse:
    from fenliu.loop import stats  # scikit-learn and openpyxl load only when asked

    d_from, d_to = _day_range(request)
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "xlsx"):
        raise ApiError(400, "bad_field", "format 须为 csv 或 xlsx / format: csv or xlsx")
    figs = await asyncio.to_thread(_read, request, _figures(request, stats.figures), d_from, d_to)
    name = f"fenliu-{d_from}-{d_to}.{fmt}"
    if fmt == "csv":
        buf = io.StringIO()
        stats.to_csv(figs, buf)
        data, ctype = buf.getvalue().encode("utf-8"), "text/csv; charset=utf-8"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            await asyncio.to_thread(stats.to_xlsx, figs, str(path))
            data = path.read_bytes()
        ctype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    _user_name = _user(request).name
    request.app[STORE].audit(_user_name, "export", None, "ok", {"from": d_from, "to": d_to, "format": fmt})
    return web.Response(body=data, content_type=ctype.split(";")[0], charset="utf-8" if fmt == "csv" else None,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def leads_view(request: web.Request) -> web.StreamResponse:
    from fenliu.loop import stats  # scikit-learn and openpyxl load only when asked

    f = request.app[SETTINGS].followup
    days = query_int(request, "days", int(f.cluster_days), 1, 366)
    rows = await asyncio.to_thread(_read, request, stats.leads, time.time() - days * 86400,
                                   f.cluster_min_numbers)
    return web.json_response({"leads": rows, "days": days, "min_numbers": f.cluster_min_numbers})


async def _signed(request: web.Request, secret_env: str, what: str) -> tuple[str, dict[str, Any]] | web.Response:
    """Verify a webhook's HMAC (Standard Webhooks); returns (delivery id, body) or an error reply."""
    secret = secret_from_env(secret_env)
    if secret is None:
        raise ApiError(503, "no_secret", f"{what} 的签名密钥未配置 / no shared secret: set {secret_env or 'secret_env'} "
                                         f"in the environment")
    raw = await request.read()
    try:
        delivery = verify(secret, request.headers, raw, time.time())
    except SignatureError as e:
        raise ApiError(401, "bad_signature", str(e)) from None
    data = await body(request)  # the same bounded JSON-object parsing as every other route (read once)
    if request.app[STORE].webhook_seen(delivery):
        return web.json_response({"ok": True, "duplicate": True})
    return delivery, data


async def hook_platform(request: web.Request) -> web.StreamResponse:
    """A hotline platform reports an order's status (双向流转)."""
    pid = request.match_info["platform"]
    platform = request.app[SETTINGS].platforms.get(pid)
    if platform is None:
        raise ApiError(404, "no_such_platform", f"没有这个平台 / no platform {quoted(pid)!r} in [platforms]")
    got = await _signed(request, platform.secret_env, f"platforms.{pid}")
    if isinstance(got, web.Response):
        return got
    delivery, data = got
    ref: Any = data.get("order_no") or data.get(platform.ref_field)
    word: Any = data.get("status")
    if not isinstance(ref, str | int) or not isinstance(word, str):
        raise ApiError(400, "bad_field", "须有 order_no 与 status / order_no and status are required")
    status = platform.status_map.get(word) or DEFAULT_STATUS_WORDS.get(word.strip().lower())
    if status not in ORDER_STATUSES:
        raise ApiError(422, "bad_status", f"未知状态 {quoted(word)} / unknown status; use accepted, dispatched, "
                                          f"completed, returned (or map it in platforms.{pid}.status_map)")
    at = data.get("at")
    at = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else time.time()
    note = str(data["note"]) if isinstance(data.get("note"), str) else ""
    store = request.app[STORE]
    row = store.order_status(str(ref), status, at, f"platform:{pid}",
                             {"note": note[:500], "delivery": delivery[:100], "word": word[:40]}, platform=pid)
    if row is None:
        owner = store.order_platform(str(ref))
        if owner is not None:  # another platform's order: answered exactly as an unknown one, and audited
            store.audit(f"platform:{pid}", "webhook_foreign_order", None, "refused",
                        {"ref": str(ref)[:64], "owner": owner, "status": status, "delivery": delivery[:100]})
        raise ApiError(404, "no_such_order", f"没有这个工单 / no order {quoted(str(ref))!r}")
    store.webhook_done(delivery, time.time())
    if not row["applied"]:  # late or out of order: in the trail, status unchanged; no retry wanted
        return web.json_response({"ok": True, "order_no": row["order_no"], "status": row["status"], "applied": False})
    request.app[WAKE]()  # a follow-up SMS may have been queued
    return web.json_response({"ok": True, "order_no": row["order_no"], "status": status, "applied": True})


async def hook_sms(request: web.Request) -> web.StreamResponse:
    """The SMS gateway forwards a caller's reply ("1 满意 / 2 基本满意 / 3 不满意")."""
    got = await _signed(request, request.app[SETTINGS].sms.secret_env, "sms")
    if isinstance(got, web.Response):
        return got
    delivery, data = got
    number, text = data.get("from"), data.get("text")
    if not isinstance(number, str) or not isinstance(text, str):
        raise ApiError(400, "bad_field", "须有 from 与 text / from and text are required")
    placed = request.app[STORE].sms_reply(number, text[:200], time.time())
    request.app[STORE].webhook_done(delivery, time.time())
    if placed is None:  # not an answer we can place: say so, but do not make the gateway retry
        return web.json_response({"ok": True, "placed": False,
                                  "why": "不是评价回复，或此号码近 30 天没有待评价的短信 / not a 1/2/3 answer to a "
                                         "question we asked this number"})
    return web.json_response({"ok": True, "placed": True, **placed})



ORDER_STATES = ("local", "queued", "accepted", "dispatched", "completed", "returned", "failed")
ROUTES: list[tuple[str, str, Handler, Access]] = [
    ("GET", "/api/health", health, PUBLIC),
    ("GET", "/api/ready", ready, PUBLIC),
    ("POST", "/api/login", login, PUBLIC),
    ("POST", "/api/logout", logout, OPERATOR),
    ("GET", "/api/me", me, OPERATOR),
    ("GET", "/api/config", config, OPERATOR),
    ("GET", "/api/controls", controls_view, OPERATOR),
    ("POST", "/api/controls", controls_set, SUPERVISOR_ROLE),
    ("GET", "/api/calls", calls, OPERATOR),
    ("GET", "/api/calls/{call_id}", call_detail, OPERATOR),
    ("POST", "/api/calls/{call_id}/transfer", transfer, OPERATOR),
    ("POST", "/api/calls/{call_id}/cancel-transfer", cancel_transfer, OPERATOR),
    ("POST", "/api/calls/{call_id}/release-operator", release_operator, OPERATOR),
    ("POST", "/api/calls/{call_id}/hangup", hangup, OPERATOR),
    ("GET", "/api/history", history, OPERATOR),
    ("GET", "/api/events", events, OPERATOR),
    ("GET", "/api/negative-list", negative_list, OPERATOR),
    ("POST", "/api/negative-list/reload", reload_list, SUPERVISOR_ROLE),
    ("PUT", "/api/negative-list", put_list, SUPERVISOR_ROLE),
    ("GET", "/api/audit", audit, SUPERVISOR_ROLE),
    ("GET", "/api/users", users, ADMIN),
    ("POST", "/api/users", add_user, ADMIN),
    ("GET", "/api/openapi.json", openapi, OPERATOR),
    ("GET", "/metrics", metrics_view, PUBLIC),  # loopback or its own token, checked in the handler
    ("GET", "/api/orders", orders, SUPERVISOR_ROLE),
    ("GET", "/api/orders/{order_no}", order_detail, SUPERVISOR_ROLE),
    ("POST", "/api/orders/{order_no}/retry", order_retry, SUPERVISOR_ROLE),
    ("GET", "/api/alerts", alerts, SUPERVISOR_ROLE),
    ("POST", "/api/alerts/{alert_id}/ack", ack_alert, SUPERVISOR_ROLE),
    ("GET", "/api/callbacks", callbacks, OPERATOR),
    ("POST", "/api/drain", drain, SUPERVISOR_ROLE),
    ("POST", "/api/callbacks/{callback_id}/done", callback_done, OPERATOR),
    ("GET", "/api/calls/{call_id}/loop", call_loop, OPERATOR),
    ("POST", "/api/calls/{call_id}/followups", add_followup, SUPERVISOR_ROLE),
    ("GET", "/api/stats", stats_view, SUPERVISOR_ROLE),
    ("GET", "/api/stats/export", stats_export, SUPERVISOR_ROLE),
    ("GET", "/api/leads", leads_view, SUPERVISOR_ROLE),
    ("POST", "/api/hooks/platform/{platform}", hook_platform, PUBLIC),  # HMAC-signed, checked in the handler
    ("POST", "/api/hooks/sms", hook_sms, PUBLIC),  # HMAC-signed, checked in the handler
]
ACCESS = {(method, path): access for method, path, _, access in ROUTES}
