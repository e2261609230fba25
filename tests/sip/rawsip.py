"""A small raw-SIP caller over UDP for what SIPp's scenarios make awkward: a storm of re-INVITEs
each answered 200 or refused (491 with its ACK on the same branch), recording every status and
Retry-After. Speaks just enough SIP for a dialog with a fenliu worker on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import time
import uuid
from dataclasses import dataclass, field

SDP = ("v=0\r\no=raw 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {rtp} RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: str


@dataclass
class RawCaller:
    """One dialog from 127.0.0.1:<ephemeral> to ``target_port``."""

    target_port: int
    user: str = "110"
    sock: socket.socket = field(init=False)
    call_id: str = field(default_factory=lambda: f"raw-{uuid.uuid4().hex[:12]}@127.0.0.1")
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    cseq: int = 1
    remote_tag: str = ""
    contact: str = ""
    rtp: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a port nobody else takes meanwhile
        rtp.bind(("127.0.0.1", 0))
        self.rtp = rtp.getsockname()[1]
        rtp.close()

    # -- messages ---------------------------------------------------------------------------------
    def _request(self, method: str, branch: str, cseq: int, body: str = "", uri: str = "") -> None:
        to = f"<sip:{self.user}@127.0.0.1:{self.target_port}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        lines = [f"{method} {uri or self.contact or f'sip:{self.user}@127.0.0.1:{self.target_port}'} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch}",
                 f"From: <sip:13800000000@127.0.0.1:{self.port}>;tag={self.tag}", f"To: {to}",
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:13800000000@127.0.0.1:{self.port}>", "Max-Forwards: 70"]
        if body:
            lines += ["Content-Type: application/sdp", f"Content-Length: {len(body.encode())}", "", body]
        else:
            lines += ["Content-Length: 0", "", ""]
        self.sock.sendto("\r\n".join(lines).encode(), ("127.0.0.1", self.target_port))

    def _final(self, method: str, cseq: int, timeout: float = 10.0) -> Answer:
        """The final response to our request (provisional ones and stray requests are skipped;
        a BYE from the far end is answered 200 and reported as status 0)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError as e:
                raise TimeoutError(f"no final answer to {method} {cseq}") from e
            text = data.decode(errors="replace")
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            headers = {h.split(":", 1)[0].strip().lower(): h.split(":", 1)[1].strip() for h in head[1:] if ":" in h}
            if not head[0].startswith("SIP/2.0"):
                if head[0].startswith("BYE"):
                    self._respond(text, 200)
                    return Answer(0, headers, text)
                if head[0].startswith("OPTIONS"):
                    self._respond(text, 200)
                continue
            status = int(head[0].split()[1])
            if status >= 200 and headers.get("cseq", "").endswith(f"{cseq} {method}"):
                return Answer(status, headers, text)

    def _respond(self, request: str, status: int) -> None:
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
        reply = "\r\n".join([f"SIP/2.0 {status} OK", *keep, "Content-Length: 0", "", ""])
        self.sock.sendto(reply.encode(), ("127.0.0.1", self.target_port))

    # -- the dialog ---------------------------------------------------------------------------
    def call(self) -> Answer:
        branch = f"z9hG4bK-{uuid.uuid4().hex[:10]}"
        self._request("INVITE", branch, self.cseq, SDP.format(version=1, rtp=self.rtp, direction="sendrecv"))
        answer = self._final("INVITE", self.cseq)
        if answer.status == 200:
            m = re.search(r"tag=([^;>\s]+)", answer.headers.get("to", ""))
            self.remote_tag = m.group(1) if m else ""
            c = re.search(r"<([^>]+)>", answer.headers.get("contact", ""))
            self.contact = c.group(1) if c else ""
            self._request("ACK", f"z9hG4bK-{uuid.uuid4().hex[:10]}", self.cseq)
        return answer

    def reinvite(self, direction: str) -> Answer:
        """One re-INVITE and its ACK: a new branch for a 2xx's ACK, the INVITE's own for a refusal's."""
        self.cseq += 1
        branch = f"z9hG4bK-{uuid.uuid4().hex[:10]}"
        self._request("INVITE", branch, self.cseq, SDP.format(version=self.cseq, rtp=self.rtp, direction=direction))
        answer = self._final("INVITE", self.cseq)
        self._request("ACK", f"z9hG4bK-{uuid.uuid4().hex[:10]}" if answer.status < 300 else branch, self.cseq)
        return answer

    def bye(self) -> Answer:
        self.cseq += 1
        self._request("BYE", f"z9hG4bK-{uuid.uuid4().hex[:10]}", self.cseq)
        return self._final("BYE", self.cseq)

    def close(self) -> None:
        self.sock.close()
