"""Accounts, roles, sessions and API tokens of the console and the API.

Passwords are hashed with argon2id (argon2-cffi). Session ids and API tokens are random
(``secrets``) and only their SHA-256 is stored, so a copy of the database opens no session.
Wrong passwords are slowed down per account and per address (``LoginThrottle``).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fenliu.store.record import Store

ROLES = ("operator", "supervisor", "admin")
ROLE_NAMES = {"operator": "话务员", "supervisor": "班长", "admin": "管理员"}
TOKEN_PREFIX = "flt_"
MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    seat: str = ""
    via: str = "session"  # "session" or "token:<name>"

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def sees_full_numbers(self) -> bool:
        return self.at_least("supervisor")

    def may_see(self, call_seat: str) -> bool:
        """Operators see the calls of their seat; a call rung to no seat (answer mode) or a user
        with no seat (a one-seat centre) sees all; supervisors and admins see every call."""
        return self.at_least("supervisor") or not self.seat or not call_seat or call_seat == self.seat


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str, *, retry_after: float = 0.0, delay: float = 0.0,
                 bursts: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after  # 429: when this account may try again from this address
        self.delay = delay  # a wrong password: answer this many seconds later (the tarpit)
        self.bursts = bursts  # what just crossed a burst threshold ("account:NAME", "address:ADDR")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class LoginThrottle:
    """Slows password guessing down without handing anybody a lock-out tool. Following the OWASP
    Authentication Cheat Sheet ("Login Throttling", and its warning that account lockout lets an
    attacker deny service to real users), nothing is ever locked:

    - **one account from one address** (the only refusal): after ``pair_free`` wrong passwords
      within ``window`` s, the next attempt from that pair must wait 1, 2, 4, … s (at most
      ``max_wait``) after the last failure; earlier ones get 429 with Retry-After and are not
      checked. The same account from any other address, and every other account from this
      address, are not refused;
    - **the account, and the address, over all pairs**: each wrong password beyond ``tarpit_free``
      of either within ``window`` s is answered later (0.25, 0.5, 1, … s, at most ``max_tarpit``)
      — a right password is answered at once, so the real user never waits;
    - **bursts** (``burst_account`` failures for one account, or ``burst_address`` from one address,
      within ``window`` s) are reported once per window, for an alert to supervisors.
    """

    def __init__(self, pair_free: int = 3, max_wait: float = 60.0, tarpit_free: int = 5, max_tarpit: float = 5.0,
                 window: float = 900.0, burst_account: int = 10, burst_address: int = 20) -> None:
        self.pair_free, self.max_wait = pair_free, max_wait
        self.tarpit_free, self.max_tarpit = tarpit_free, max_tarpit
        self.window = window
        self.burst = {"account": burst_account, "address": burst_address}
        self._fails: dict[str, list[float]] = {}  # "pair:…", "account:…", "address:…" -> failure times
        self._lock = threading.Lock()  # logins are checked on executor threads

    def _recent(self, key: str, now: float) -> list[float]:
        recent = [t for t in self._fails.get(key, ()) if now - t < self.window]
        if recent:
            self._fails[key] = recent
        else:
            self._fails.pop(key, None)
        return recent

    def wait(self, account: str, address: str) -> float:
        """Seconds this account must still wait before trying again from this address (0: go on)."""
        with self._lock:
            now = time.monotonic()
            recent = self._recent(f"pair:{account}\n{address}", now)
            if len(recent) < self.pair_free:
                return 0.0
            pause = min(2.0 ** (len(recent) - self.pair_free), self.max_wait)
            return max(0.0, recent[-1] + pause - now)

    def failed(self, account: str, address: str) -> tuple[float, tuple[str, ...]]:
        """Count a wrong password; returns how long to delay the answer and the bursts it started."""
        with self._lock:
            now = time.monotonic()
            if len(self._fails) > 10_000:  # bounded: forget what is older than the window
                for k in list(self._fails):
                    self._recent(k, now)
            worst, bursts = 0, []
            for kind, who in (("account", account), ("address", address)):
                key = f"{kind}:{who}"
                recent = self._recent(key, now) + [now]
                self._fails[key] = recent
                worst = max(worst, len(recent))
                if len(recent) == self.burst[kind]:
                    bursts.append(key)
            self._fails.setdefault(f"pair:{account}\n{address}", []).append(now)
            over = worst - self.tarpit_free
            delay = 0.0 if over <= 0 else min(0.25 * 2.0 ** (over - 1), self.max_tarpit)
            return delay, tuple(bursts)

    def succeeded(self, account: str, address: str) -> None:
        """The right password: this pair starts afresh (the account's and address's counts stay,
        so an attacker cannot reset them by logging in to an account of their own)."""
        with self._lock:
            self._fails.pop(f"pair:{account}\n{address}", None)


class Accounts:
    def __init__(self, store: Store, idle_minutes: float = 480.0) -> None:
        self.store = store
        self.idle = idle_minutes * 60
        self.hasher = PasswordHasher()
        self.throttle = LoginThrottle()
        self._dummy = self.hasher.hash(secrets.token_hex(8))  # equal work for unknown names
        # credentials the store confirmed lately: while it cannot be read (a PostgreSQL restart, a
        # locked SQLite) they still open the console for OUTAGE_GRACE s — live calls and the one key
        # go on; a logout or revocation made meanwhile applies as soon as the store is read again
        self._confirmed: dict[str, tuple[User, str, float]] = {}  # digest -> (user, csrf, when confirmed)

    def _from_store(self, key: str, read: Any) -> Any:
        """``read()`` from the store; when the store is unavailable, the credential's last confirmed
        (user, csrf) within OUTAGE_GRACE, else a 503 saying why."""
        try:
            return read()
        except AuthError:
            raise
        except Exception as e:
            if not self.store.db.unavailable(e):
                raise
            seen = self._confirmed.get(key)
            if seen is not None and time.time() - seen[2] < OUTAGE_GRACE:
                return seen
            raise AuthError(503, "store_unavailable", "数据库暂时不可用，请稍后再登录 / the store is unavailable just "
                                                      "now; try again shortly") from e

    def _confirm(self, key: str, user: User, csrf: str) -> None:
        now = time.time()
        if len(self._confirmed) > 10_000:  # sweep what is too old to be used anyway
            self._confirmed = {k: v for k, v in self._confirmed.items() if now - v[2] < OUTAGE_GRACE}
        self._confirmed[key] = (user, csrf, now)

    # -- administration (the CLI) ----------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str, seat: str = "") -> User:
        if role not in ROLES:
            raise ValueError(f"未知角色 {role!r} / unknown role: use {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ValueError("账户名须为 1–64 个字母、数字、_ - . / user name: 1-64 letters, digits, _ - .")
        check_password(password)
        uid = self.store.add_user(name, role, self.hasher.hash(password), seat)
        return User(uid, name, role, seat)

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        if not self.store.set_password(name, self.hasher.hash(password)):
            raise ValueError(f"没有账户 {name!r} / no user {name!r}")

    def create_token(self, token_name: str, user_name: str) -> str:
        u = self.store.user(user_name)
        if u is None:
            raise ValueError(f"没有账户 {user_name!r} / no user {user_name!r}: fenliu user add {user_name} --role …")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.store.add_token(token_name, u["id"], digest(token))
        return token

    # -- login and sessions ---------------------------------------------------------------------
    def login(self, name: str, password: str, address: str) -> tuple[User, str, str]:
        """Returns the user, the session id (for the cookie) and the CSRF token."""
        wait = self.throttle.wait(name, address)
        if wait > 0:
            seconds = int(wait) + 1
            raise AuthError(429, "too_many_attempts", f"该账户在此地址登录失败次数过多，请 {seconds} 秒后再试 / too many "
                                                      f"failed logins for this account from this address, retry in "
                                                      f"{seconds} s", retry_after=seconds)
        try:
            u = self.store.user(name)
        except Exception as e:
            if not self.store.db.unavailable(e):
                raise
            raise AuthError(503, "store_unavailable", "数据库暂时不可用，无法登录；已登录的接警台照常工作 / the store is "
                                                      "unavailable just now: no new login (open consoles go on)") from e
        ok = False
        try:
            ok = self.hasher.verify(u["pw_hash"] if u else self._dummy, password) and u is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or u is None or u["disabled"]:
            delay, bursts = self.throttle.failed(name, address)
            raise AuthError(401, "bad_login", "账户或密码错误 / wrong user name or password", delay=delay, bursts=bursts)
        self.throttle.succeeded(name, address)
        if self.hasher.check_needs_rehash(u["pw_hash"]):
            self.store.set_password(name, self.hasher.hash(password))
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self.store.add_session(digest(sid), u["id"], csrf)
        user = User(u["id"], u["name"], u["role"], u["seat"])
        self._confirm(digest(sid), user, csrf)
        return user, sid, csrf

    def session_user(self, sid: str) -> tuple[User, str]:
        """The user of a session cookie and its CSRF token; a session idle too long has ended."""
        h = digest(sid)
        got = self._from_store(h, lambda: self._session_user(h))
        return got[0], got[1]

    def _session_user(self, h: str) -> tuple[User, str]:
        s = self.store.session(h)
        if s is None:
            raise AuthError(401, "unauthenticated", "未登录或会话已失效，请登录 / not logged in")
        now = time.time()
        if self._session_ended(s, now):
            self.store.drop_session(h)
            raise AuthError(401, "session_expired", "会话已过期，请重新登录 / session expired, log in again")
        if now - s["last_seen"] > 30:  # write at most every 30 s per session
            self.store.touch_session(h, now)
        user = User(s["user_id"], s["name"], s["role"], s["seat"])
        self._confirm(h, user, s["csrf"])
        return user, s["csrf"]

    def _session_ended(self, s: dict[str, Any], now: float) -> str:
        """Why a stored session no longer opens anything ("" while it does)."""
        if s["disabled"]:
            return "account_disabled"
        return "session_expired" if now - s["last_seen"] > self.idle else ""

    def logout(self, sid: str) -> None:
        self.store.drop_session(digest(sid))

    def credential_user(self, credential: str) -> tuple[User | None, str]:
        """Is this credential ("session:<sha256>" / "token:<sha256>", see ``credential_of``) still
        good? Returns its user as the store says now, or None and why not (a machine code the
        console maps to Chinese). Read only: an open event stream does not keep a session alive."""
        kind, _, h = credential.partition(":")
        if kind == "session":
            s = self.store.session(h)
            if s is None:
                return None, "session_ended"  # logged out, password changed, or expired and swept
            why = self._session_ended(s, time.time())
            return (None, why) if why else (User(s["user_id"], s["name"], s["role"], s["seat"]), "")
        if kind == "token":
            t = self.store.token(h, touch=False)
            if t is None:
                return None, "token_revoked"
            if t["disabled"]:
                return None, "account_disabled"
            return User(t["user_id"], t["name"], t["role"], t["seat"], via=f"token:{t['token_name']}"), ""
        return None, "session_ended"

    def token_user(self, token: str) -> User:
        h = digest(token)
        return self._from_store(h, lambda: self._token_user(token, h))[0]

    def _token_user(self, token: str, h: str) -> tuple[User, str]:
        t = self.store.token(h) if token.startswith(TOKEN_PREFIX) else None
        if t is None or t["disabled"]:
            raise AuthError(401, "bad_token", "API 令牌无效或已吊销 / invalid or revoked API token")
        user = User(t["user_id"], t["name"], t["role"], t["seat"], via=f"token:{t['token_name']}")
        self._confirm(h, user, "")
        return user, ""


OUTAGE_GRACE = 900.0  # s: how long a credential the store confirmed opens the console while it is down


def credential_of(session_id: str = "", token: str = "") -> str:
    """What an event stream remembers of how it was opened (a hash, never the secret)."""
    return f"token:{digest(token)}" if token else f"session:{digest(session_id)}"


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"密码至少 {MIN_PASSWORD} 个字符 / password: at least {MIN_PASSWORD} characters")
