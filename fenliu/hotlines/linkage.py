"""What 110 ↔ hotline linkage needs to know, from the settings: which site a call belongs to
(by called number or trunk), which targets and platform serve it, which targets are urgent
services rather than diversions, the caller's number, and the texts of a work order and of the
SMS to the caller. Pure functions and lookups: the store and the outbox do the I/O."""

from __future__ import annotations

import hashlib
import re
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fenliu.errors import ConfigError
from fenliu.settings import PlatformSettings, Settings, target_label

ORDER_STATUSES = ("accepted", "dispatched", "completed", "returned")
# platform words for the four statuses (a platform's own words go in [platforms.ID.status_map])
DEFAULT_STATUS_WORDS = {"accepted": "accepted", "受理": "accepted", "已受理": "accepted",
                        "dispatched": "dispatched", "派遣": "dispatched", "已派遣": "dispatched", "派单": "dispatched",
                        "completed": "completed", "办结": "completed", "已办结": "completed", "结案": "completed",
                        "returned": "returned", "退回": "returned", "退单": "returned", "已退回": "returned"}

_USER = re.compile(r"sips?:([^@;>]+)@([^;>:]+)")
_PLACE = re.compile(r"[\u4e00-\u9fa5A-Za-z0-9]{1,12}?(?:路|街|大道|巷|胡同|小区|花园|公寓|广场|大厦|商场|市场|村|镇|乡|社区|"
                    r"公园|学校|医院|酒店|宾馆|酒吧|饭店|号楼|栋|单元|号)(?:[0-9一二三四五六七八九十]+号)?")


_LEAD = re.compile(r"^(?:我们|我家|我|他们|他|她|这里|这边|就|现在)?(?:住|是|家)?(?:在|于|到)?")


def caller_number(remote_uri: str) -> str:
    """The caller's number from a SIP URI (``"x" <sip:+8613800001111@pbx>`` → ``13800001111``)."""
    m = _USER.search(remote_uri)
    user = m.group(1) if m else remote_uri
    digits = re.sub(r"[^0-9+]", "", user)
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix) and len(digits) > len(prefix) + 6:
            digits = digits[len(prefix):]
    return digits.lstrip("+")


def uri_host(uri: str) -> str:
    m = _USER.search(uri)
    return m.group(2) if m else ""


def uri_user(uri: str) -> str:
    m = _USER.search(uri)
    return m.group(1) if m else ""


def mobile(number: str) -> str | None:
    """A mainland mobile number that can receive an SMS, or None (landlines, short numbers, junk)."""
    n = caller_number(number) if "@" in number else re.sub(r"[^0-9]", "", number)
    if n.startswith("86") and len(n) == 13:
        n = n[2:]
    return n if re.fullmatch(r"1[3-9][0-9]{9}", n) else None


def location_of(text: str) -> str:
    """The first place the caller named (a street, estate, building …), or ""."""
    m = _PLACE.search(text or "")
    return _LEAD.sub("", m.group(0)) if m else ""


@dataclass(frozen=True)
class Templates:
    guidance: dict[str, str]
    followup: dict[str, str]

    @staticmethod
    def load(path: str = "") -> Templates:
        try:
            text = Path(path).read_text(encoding="utf-8") if path else \
                resources.files("fenliu.hotlines").joinpath("sms_templates.toml").read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError as e:
            raise ConfigError(f"短信模板文件不存在 / sms.templates not found: {path}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"短信模板语法错误 / {path or 'sms_templates.toml'}: {e}") from e
        g, f = data.get("guidance", {}), data.get("followup", {})
        if "default" not in g or "default" not in f:
            raise ConfigError(f"短信模板 / {path}: [guidance] and [followup] each need a default template")
        t = Templates(dict(g), dict(f))
        probe = {k: "x" for k in TEMPLATE_FIELDS}
        for section, table in (("guidance", t.guidance), ("followup", t.followup)):
            for key, template in table.items():
                try:
                    template.format_map(probe)
                except (KeyError, ValueError, IndexError) as e:
                    raise ConfigError(f"短信模板 / [{section}].{key}: bad placeholder {e}; "
                                      f"use {', '.join('{' + k + '}' for k in TEMPLATE_FIELDS)}") from e
        return t

    def render(self, purpose: str, category_id: str, values: dict[str, str]) -> str:
        table = self.guidance if purpose == "guidance" else self.followup
        return table.get(category_id, table["default"]).format_map({k: values.get(k, "") for k in TEMPLATE_FIELDS})


TEMPLATE_FIELDS = ("hotline", "hotline_name", "order_no", "category", "dept", "date")
class Linkage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.zone = ZoneInfo(settings.store.timezone)
        t = settings.transfer
        self.urgent = {x.strip() for x in t.urgent.split(",") if x.strip()}
        self.uri_to_target: dict[str, str] = {uri: tid for tid, uri in t.targets.items()}
        for site in settings.sites.values():
            self.uri_to_target.update({uri: tid for tid, uri in site.targets.items()})
        self.known = set(self.uri_to_target.values())  # every target id the configuration names
        self.templates = Templates.load(settings.sms.templates)

    # -- where a call belongs ------------------------------------------------------------------
    def site_for(self, called: str, trunk: str) -> str:
        """The first site whose numbers and trunks both admit the call ("" when none is configured)."""
        for sid, site in self.settings.sites.items():
            numbers = {n.strip() for n in site.numbers.split(",") if n.strip()}
            trunks = {h.strip() for h in site.trunks.split(",") if h.strip()}
            if ("*" in numbers or called in numbers) and (not trunks or trunk in trunks):
                return sid
        return ""

    def targets_for(self, site: str) -> dict[str, str]:
        out = dict(self.settings.transfer.targets)
        if site in self.settings.sites:
            out.update(self.settings.sites[site].targets)
        return out

    def target_id(self, uri_or_id: str) -> str:
        return self.uri_to_target.get(uri_or_id, uri_or_id)

    def is_diversion(self, target_id: str) -> bool:
        """A configured hotline target (a work order follows): not police, not an urgent service,
        not a SIP address somebody typed (work orders are made only for targets the centre knows)."""
        return bool(target_id) and target_id in self.known and target_id != "police" and target_id not in self.urgent

    def platform_for(self, site: str, target_id: str) -> tuple[str, PlatformSettings | None]:
        platforms = self.settings.platforms
        if site in self.settings.sites:
            table = self.settings.sites[site].platforms
            pid = table.get(target_id, table.get("*", ""))
        else:  # no sites: a platform named after the target, else one that lists it; never another hotline's
            takes = [p for p, ps in platforms.items() if target_id in {x.strip() for x in ps.targets.split(",")}]
            pid = target_id if target_id in platforms else (takes[0] if takes else "")
        return pid, platforms.get(pid)

    # -- texts -----------------------------------------------------------------------------------
    def day(self, t: float) -> str:
        return datetime.fromtimestamp(t, self.zone).strftime("%Y-%m-%d")

    def iso(self, t: float) -> str:
        return datetime.fromtimestamp(t, self.zone).isoformat(timespec="seconds")

    @staticmethod
    def order_no(call_id: str, t: float, zone: ZoneInfo) -> str:
        stamp = datetime.fromtimestamp(t, zone).strftime("%Y%m%d")
        return f"FL{stamp}-{hashlib.sha1(call_id.encode()).hexdigest()[:10].upper()}"

    def order_body(self, call: dict[str, Any], decision: dict[str, Any] | None, order_no: str, target_id: str,
                   site: str, now: float, deadline: float | None) -> dict[str, Any]:
        """The work order in fenliu's own field names (a platform's names come from its mapping)."""
        d = decision or {}
        if d.get("target") != target_id:  # the operator's own choice: the router's category is not this order's
            d = {**d, "category": "未分类（接警员判断）", "category_id": "", "dept": ""}
        text = call.get("text") or ""
        caller_lines = [ln.split(": ", 1)[1] for ln in text.splitlines() if ln.startswith("caller: ")]
        excerpt = "".join(caller_lines)[-500:] or d.get("text", "")
        return {
            "order_no": order_no, "call_id": call["call_id"], "caller": call.get("number", ""),
            "called": call.get("called", ""), "site": site,
            "site_name": self.settings.sites[site].name if site in self.settings.sites else "",
            "received_at": self.iso(call.get("started_at") or now), "created_at": self.iso(now),
            "deadline": self.iso(deadline) if deadline else "",
            "target": target_id, "hotline": target_id, "category": d.get("category", ""),
            "category_id": d.get("category_id", ""), "dept": d.get("dept", ""),
            "location": location_of(excerpt), "excerpt": excerpt,
            "matched": [m.get("heard") or m.get("word") for m in d.get("matched", [])],
            "reason": d.get("reason", ""), "rule_version": d.get("rule_version", ""),
            "suggested": (decision or {}).get("target", ""), "source": "110",
        }

    def sms_text(self, purpose: str, order: dict[str, Any]) -> str:
        target = order.get("target", "")
        number, name = target_label(self.settings.transfer, target)  # [transfer.names], as the console shows it
        return self.templates.render(purpose, order.get("category_id", ""), {
            "hotline": number, "hotline_name": number + name,
            "order_no": order.get("platform_ref") or order.get("order_no", ""), "category": order.get("category", ""),
            "dept": order.get("dept", "") or "相关部门", "date": self.day(order.get("created_at") or time.time())})


def map_fields(body: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """A platform's JSON from fenliu's order: each platform field is a template of fenliu fields
    (``"{caller}"``, ``"{category}/{dept}"``) or a constant. An empty mapping sends fenliu's fields."""
    if not mapping:
        return dict(body)
    flat = {k: ("、".join(map(str, v)) if isinstance(v, list) else v) for k, v in body.items()}
    out: dict[str, Any] = {}
    for name, template in mapping.items():
        m = re.fullmatch(r"\{(\w+)\}", template)
        out[name] = body.get(m.group(1), "") if m else template.format_map(_Blank(flat))
    return out


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""
