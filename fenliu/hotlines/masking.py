"""One masker for callers' numbers, wherever they are shown to somebody who may not see them
in full (operators in the console and the API, the event feed, exports, SMS records).

``mask_number`` takes any form a number comes in — a bare number (``13812341234``,
``+86 138-1234-1234``), a ``tel:`` URI (RFC 3966, visual separators included), a ``sip:`` or
``sips:`` URI, a full SIP name-addr with a display name (``"张三 13812341234" <sip:…@pbx>``) —
and hides the middle of every number of 5 or more digits: numbers of 9+ digits keep their first
3 and last 4 digits (``138****1234``, the form Chinese services print), shorter ones their first
1 and last 2. Separators stay where they are. A SIP URI's host and port are not the caller's and
are left as they are (``<sip:138****1234@10.0.0.1:5060>``).
"""

from __future__ import annotations

import re

# digits with the visual separators people and RFC 3966 put in numbers
_NUMBER = re.compile(r"\+?\d(?:[\d\-.() ]*\d)?")
# what is never masked: a SIP URI's "@host:port", and a SIP URI that has no user part at all
_HOST = re.compile(r"@[^;>\s,\"<]*|sips?:(?![^>\s]*@)[^;>\s,\"<]*", re.IGNORECASE)


def _hide(m: re.Match[str]) -> str:
    run = m.group(0)
    digits = "".join(c for c in run if c.isdigit())
    # China's country code is shown, not counted: +86 138****1234
    prefix = 2 if run.startswith("+86") and len(digits) > 11 else 4 if digits.startswith("0086") else 0
    n = len(digits) - prefix
    if n < 5:
        return run
    head, tail = (3, 4) if n >= 9 else (1, 2)
    out, seen = [], -prefix
    for c in run:
        if c.isdigit():
            out.append(c if seen < head or seen >= n - tail else "*")
            seen += 1
        else:
            out.append(c)
    return "".join(out)


def mask_number(text: str | None) -> str:
    """``text`` with the middle of every caller number hidden (see the module's doc)."""
    text = text or ""
    out, pos = [], 0
    for m in _HOST.finditer(text):
        out.append(_NUMBER.sub(_hide, text[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_NUMBER.sub(_hide, text[pos:]))
    return "".join(out)
