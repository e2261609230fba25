"""The calls of an instance that is gone: ended cleanly, never left in dead air.

When an instance dies (``kill -9``, a crashed machine), its callers and the hotlines in three-way
calls with them stay on a line nobody serves. Another instance of the centre (``fenliu.console.
centre`` finds the death by the store's heartbeats), or the instance itself when it starts again,
calls ``release_instance``: the instance's open call records are closed with the reason, each
caller goes on the callback list (a person calls them back), and every leg still up gets a BYE
built from the SIP dialog its worker persisted (``leg_dialogs``) — sent from this machine (the
dead worker's address may be another machine's): UAs match a BYE by Call-ID and tags.

Releasing, not taking over: pjsua2 cannot adopt another process's dialog and media, and a caller
who hears silence must be called back by a person anyway (ARCHITECTURE.md, "When fenliu may end
a call")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fenliu.sip.dialogs import DialogId, release
from fenliu.store.record import Store


@dataclass
class Released:
    instance: str
    reason: str
    calls: list[dict[str, Any]] = field(default_factory=list)  # call_id, number, remote, started_at
    legs: list[tuple[str, str, int]] = field(default_factory=list)  # (call id, leg, BYE's final status; 0: none)

    def summary(self) -> str:
        answered = sum(1 for _, _, st in self.legs if st)
        return (f"{len(self.calls)} call(s) closed, {len(self.legs)} leg(s) sent a BYE "
                f"({answered} answered)")


def release_instance(store: Store, instance: str, reason: str, address: str = "127.0.0.1",
                     timeout: float = 4.0) -> Released:
    """Close an instance's leftover calls (callback list) and hang up their legs."""
    calls, dialogs = store.close_lost(instance, reason)
    out = Released(instance, reason, calls)
    if dialogs:
        ids = [DialogId(d["sip_call_id"], d["local_party"], d["remote_party"], d["target"], tuple(d["routes"]))
               for d in dialogs]
        status = release(ids, address, 0, reason=reason[:80], timeout=timeout)
        out.legs = [(d["call_id"], d["leg"], status.get(d["sip_call_id"], 0)) for d in dialogs]
    return out
