"""Centre-wide switches a duty supervisor throws for every instance at once.

During a major incident, or when the router misbehaves, diversion has to stop everywhere:

- ``suggestions_paused`` — no diversion suggestion reaches an operator's card (it says 暂停分流);
  the one key still transfers to a target the operator picks; danger cards are unaffected;
- ``ivr_offers_paused`` — the IVR front desk offers no hotline: every caller it would have
  offered one goes to the operators' queue (danger still goes straight to the queue).

The switches live in the store (table ``controls``), so every instance sharing it follows; each
instance re-reads them twice a second (``refresh``), and the instance where a supervisor
changes them applies the change at once. Changes are audited by the API.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

SWITCHES = ("suggestions_paused", "ivr_offers_paused")


@dataclass(frozen=True)
class CentreControls:
    suggestions_paused: bool = False
    ivr_offers_paused: bool = False
    by: str = ""  # who threw the last switch, and when (unix time)
    at: float = 0.0

    @classmethod
    def from_rows(cls, rows: dict[str, dict[str, Any]]) -> CentreControls:
        last = max(rows.values(), key=lambda r: r["at"], default=None)
        return cls(**{k: rows.get(k, {}).get("value") == "1" for k in SWITCHES},
                   by=str(last["by_user"]) if last else "", at=float(last["at"]) if last else 0.0)

    def with_switch(self, name: str, on: bool, by: str, at: float) -> CentreControls:
        if name not in SWITCHES:
            raise ValueError(f"unknown switch {name!r}: use {', '.join(SWITCHES)}")
        return replace(self, **{name: on}, by=by, at=at)

    def to_dict(self) -> dict[str, Any]:
        return {"suggestions_paused": self.suggestions_paused, "ivr_offers_paused": self.ivr_offers_paused,
                "by": self.by, "at": self.at}
