"""Reading who answered an INVITE we sent (fenliu.sip.dialogs.answering_seat)."""

from __future__ import annotations

import pytest

from fenliu.sip.dialogs import answering_seat

INVITE = "INVITE sip:queue@acd SIP/2.0\r\nCSeq: 1 INVITE\r\nCall-ID: x\r\n\r\n"


def ok(*headers: str) -> str:
    return "SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nCall-ID: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"


@pytest.mark.parametrize(("answer", "header", "seat"), [
    (ok("To: <sip:queue@acd>;tag=1", "Contact: <sip:agent-9@10.0.0.9:5060>",
        'P-Asserted-Identity: "王" <sip:1003@acd>'), "", ("1003", "p-asserted-identity")),
    (ok("To: <sip:queue@acd>;tag=1", "Contact: <sip:agent-9@10.0.0.9:5060;transport=tcp>"), "",
     ("agent-9", "contact")),
    (ok("To: <sip:queue@acd>;tag=1", "P-Asserted-Identity: <tel:+861003;phone-context=acd>"), "",
     ("+861003", "p-asserted-identity")),
    (ok("To: <sip:queue@acd>;tag=1", "Contact: <sip:10.0.0.9:5060>"), "", ("queue", "to")),
    (ok("X-Agent-Id: 7788", "P-Asserted-Identity: <sip:1003@acd>"), "X-Agent-Id", ("7788", "x-agent-id")),
    (ok("P-Asserted-Identity: <sip:1003@acd>"), "X-Agent-Id", ("1003", "p-asserted-identity")),  # header absent
])
def test_the_answering_seat_is_read_from_the_2xx(answer, header, seat):
    assert answering_seat([INVITE, "SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\n\r\n", answer], header) == seat


def test_no_answer_no_seat():
    assert answering_seat([INVITE, "SIP/2.0 486 Busy Here\r\nCSeq: 1 INVITE\r\n\r\n"]) == ("", "")
