"""Dialogs a dead worker left behind, and hanging them up from outside (no pjsua2 here).

A SIP worker killed mid-call (kill -9, a crash) takes its dialog state with it: the caller,
the operator seat and the hotline each still hold a dialog with the worker's address, and
a hotline on a silent line waits for a BYE that never comes. So each worker reports every
confirmed leg's dialog (``LegDialog``: Call-ID, both tags, the remote target, the route set),
read from the INVITE / 2xx it saw; when the worker dies, the supervisor sends each of those
peers a BYE from the worker's own address before starting the worker again.

Pure functions (parsing, building the BYE) plus one small UDP exchange (:func:`release`).
"""

from __future__ import annotations

import random
import re
import socket
import time
from dataclasses import dataclass

COMPACT = {"i": "call-id", "f": "from", "t": "to", "m": "contact", "v": "via", "l": "content-length"}
BYE_CSEQ = 2_000_000_000  # above any CSeq the worker can have used (pjsip starts below 65536)


@dataclass(frozen=True)
class DialogId:
    sip_call_id: str
    local: str  # our From header value, with our tag
    remote: str  # their To header value, with their tag
    target: str  # their Contact URI (where in-dialog requests go)
    routes: tuple[str, ...] = ()  # route set, in the order requests carry it


def parse(message: str) -> tuple[str, dict[str, list[str]]]:
    """(start line, headers by lower-case full name -> values in order). Folded lines joined."""
    head = message.replace("\r\n", "\n").split("\n\n", 1)[0]
    lines: list[str] = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        elif line.strip():
            lines.append(line.strip())
    if not lines:
        return "", {}
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.setdefault(COMPACT.get(key, key), []).append(value.strip())
    return lines[0], headers


def split_values(values: list[str]) -> list[str]:
    """Comma-separated header values (Record-Route, Contact), commas inside <> or quotes kept."""
    out: list[str] = []
    for value in values:
        depth, quoted, cur = 0, False, ""
        for ch in value:
            if ch == '"':
                quoted = not quoted
            elif not quoted and ch == "<":
                depth += 1
            elif not quoted and ch == ">":
                depth -= 1
            if ch == "," and not depth and not quoted:
                out.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip():
            out.append(cur.strip())
    return out


def uri_of(value: str) -> str:
    m = re.search(r"<([^>]*)>", value)
    return (m.group(1) if m else value.split(";", 1)[0]).strip()


def has_tag(value: str) -> bool:
    return bool(re.search(r";\s*tag=", value.split(">", 1)[-1] if ">" in value else value))


def invite_and_answer(messages: list[str]) -> tuple[dict[str, list[str]] | None, dict[str, list[str]] | None]:
    """The headers of the INVITE and of its 2xx among one leg's messages (None: not seen)."""
    invite = response = None
    for msg in messages:
        start, headers = parse(msg)
        if start.startswith("INVITE "):
            invite = headers
        elif start.startswith("SIP/2.0 2") and " ".join(headers.get("cseq", [""])).upper().endswith("INVITE"):
            response = headers
    return invite, response


def dialog_from(messages: list[str], uas: bool) -> DialogId | None:
    """The dialog of one leg from the messages its INVITE transaction saw: the INVITE and
    the 2xx (``uas``: we received the INVITE). None when they are not all there."""
    invite, response = invite_and_answer(messages)
    if response is None or (uas and invite is None):
        return None
    frm, to = response.get("from", [""])[0], response.get("to", [""])[0]
    call_id = response.get("call-id", [""])[0]
    if not (call_id and has_tag(frm) and has_tag(to)):
        return None
    if uas:
        assert invite is not None
        contacts = split_values(invite.get("contact", []))
        routes = tuple(uri_of(r) for r in split_values(invite.get("record-route", [])))
        local, remote = to, frm
    else:
        contacts = split_values(response.get("contact", []))
        routes = tuple(reversed([uri_of(r) for r in split_values(response.get("record-route", []))]))
        local, remote = frm, to
    if not contacts:
        return None
    return DialogId(call_id, local, remote, uri_of(contacts[0]), routes)


def host_port(uri: str) -> tuple[str, int]:
    """Where to send a request for a SIP URI (no DNS SRV: an address or a name and a port)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        return host, int(port.lstrip(":") or 5060)
    host, _, port = rest.partition(":")
    return host, int(port or 5060)


def bye_request(d: DialogId, via: tuple[str, int], branch: str, reason: str) -> bytes:
    route_lines = "".join(f"Route: <{r}>\r\n" for r in d.routes)
    text = (f"BYE {d.target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via[0]}:{via[1]};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n{route_lines}"
            f"From: {d.local}\r\nTo: {d.remote}\r\nCall-ID: {d.sip_call_id}\r\n"
            f"CSeq: {BYE_CSEQ} BYE\r\n"
            f'Reason: SIP;cause=500;text="{reason}"\r\n'
            f"User-Agent: fenliu-reaper\r\nContent-Length: 0\r\n\r\n")
    return text.encode()


def release(dialogs: list[DialogId], address: str, port: int, reason: str = "fenliu worker restarted",
            timeout: float = 4.0) -> dict[str, int]:
    """Send each dialog a BYE from ``address:port`` (the dead worker's; an ephemeral port if it
    is taken), retransmitting like a UAC (0.5, 1, 2 s…), until each answers or ``timeout``.
    Returns Call-ID -> final status (0: no answer)."""
    if not dialogs:
        return {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            sock.bind((address, port))
        except OSError:
            sock.bind((address, 0))
        via = sock.getsockname()[:2]
        pending = {}
        for d in dialogs:
            branch = f"z9hG4bK-reap-{random.getrandbits(48):x}"
            dest = host_port(d.routes[0] if d.routes else d.target)
            pending[d.sip_call_id] = (bye_request(d, via, branch, reason), dest)
        result = {d.sip_call_id: 0 for d in dialogs}
        deadline = time.monotonic() + timeout
        interval, next_send = 0.5, 0.0
        while pending and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_send:
                for data, dest in pending.values():
                    try:
                        sock.sendto(data, dest)
                    except OSError:
                        pass
                next_send, interval = now + interval, min(interval * 2, 4.0)
            sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
            try:
                data, _ = sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            start, headers = parse(data.decode(errors="replace"))
            parts = start.split()
            if len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit() and int(parts[1]) >= 200:
                cid = headers.get("call-id", [""])[0]
                if cid in pending and " ".join(headers.get("cseq", [""])).upper().endswith("BYE"):
                    result[cid] = int(parts[1])
                    del pending[cid]
        return result
    finally:
        sock.close()


def answering_seat(messages: list[str], header: str = "") -> tuple[str, str]:
    """Who answered an INVITE we sent (the operator's seat behind a PBX or an ACD), from its
    2xx: the configured ``header`` (its URI's user, or its value), else P-Asserted-Identity's
    user, else the Contact's user, else the To's user. Returns (seat, the header it came from);
    ("", "") without a 2xx or any user."""
    _, response = invite_and_answer(messages)
    if response is None:
        return "", ""
    return _seat_in(response, ([header.lower()] if header else []) + ["p-asserted-identity", "contact", "to"], header)


def moved_to_seat(message: str, header: str = "") -> tuple[str, str]:
    """The seat an in-dialog request on the operator's leg names — an ACD that moves the call to
    another agent re-INVITEs with the new agent's identity: the configured ``header``, else
    P-Asserted-Identity (never Contact/To: in a request from the PBX they are the PBX's and ours)."""
    try:
        _, headers = parse(message)
    except ValueError:
        return "", ""
    return _seat_in(headers, ([header.lower()] if header else []) + ["p-asserted-identity"], header)


def _seat_in(headers: dict[str, list[str]], names: list[str], header: str) -> tuple[str, str]:
    for name in names:
        values = split_values(headers.get(name, []))
        if not values:
            continue
        user = _user_of(uri_of(values[0]))
        if not user and name == header.lower():
            user = values[0].strip().strip('"')[:64]  # a plain value: an agent id
        if user:
            return user, name
    return "", ""


def _user_of(uri: str) -> str:
    """The user part of a sip:/sips:/tel: URI ("sip:1003@pbx;x" → "1003"; "tel:1003" → "1003")."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips", "tel"):
        return ""
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0]
    return rest.split("@", 1)[0].split(";", 1)[0] if "@" in rest else ""
