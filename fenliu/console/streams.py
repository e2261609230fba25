"""Event streams end with their session: the guard that closes them.

A WebSocket is authenticated once, when it opens. Everything that ends a session or a token
afterwards — logout, idle expiry, ``fenliu token revoke``, a password or role change, a
disabled account, on this instance or another one sharing the store — must also end the
streams it opened, or an operator who has logged out keeps receiving callers' words. The
guard re-checks every open stream's credential against the store twice a second (read only:
a stream does not keep a session alive) and closes those whose credential has ended or whose
user changed; logout on this instance closes at once (``EventFeed.end_streams``).

The close code is ``STREAM_ENDED`` (4401) with a machine reason (``session_expired``,
``session_ended``, ``token_revoked``, ``account_disabled``, ``account_changed``,
``logged_out``); the console shows its login form with the reason in Chinese.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fenliu.console.auth import Accounts, User
from fenliu.console.feed import EventFeed

log = logging.getLogger(__name__)

STREAM_ENDED = 4401  # WebSocket close code (4000–4999: the application's own)
CHECK_EVERY_S = 0.5


def _verdicts(accounts: Accounts, credentials: dict[str, User]) -> dict[str, str]:
    """credential -> why it has ended (only those that have); runs on an executor thread."""
    out: dict[str, str] = {}
    for cred, was in credentials.items():
        now, why = accounts.credential_user(cred)
        if now is None:
            out[cred] = why
        elif (now.id, now.role, now.seat) != (was.id, was.role, was.seat):
            out[cred] = "account_changed"  # what the stream may show was decided for the old role/seat
    return out


async def keep_checking(step: Callable[[], Awaitable[None]], what: str, every: float = CHECK_EVERY_S) -> None:
    """Run ``step`` (a re-read of the store and what follows from it) every ``every`` s for the
    console's lifetime. A store that does not answer keeps what was last applied — open streams
    stay open (their owners were valid), switches stay as they were — said once until it answers."""
    failing = False
    while True:
        await asyncio.sleep(every)
        try:
            await step()
        except Exception as e:
            if not failing:
                log.warning("%s: the store did not answer (%s)", what, e)
            failing = True
            continue
        failing = False


async def guard_streams(feed: EventFeed, accounts: Accounts, every: float = CHECK_EVERY_S) -> None:
    """Runs for the console's lifetime (started and cancelled with the app)."""

    async def check() -> None:
        credentials = {c.credential: c.user for c in list(feed.clients) if c.credential}
        if credentials:
            for cred, why in (await asyncio.to_thread(_verdicts, accounts, credentials)).items():
                feed.end_streams(cred, why)

    await keep_checking(check, "event streams not re-checked", every)
