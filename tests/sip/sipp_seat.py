"""SIPp as an operator seat (a UAS that answers any number of calls) and a caller that records,
per call, who answered (the Contact of the 200: ``sip:seat@…`` or ``sip:fenliu-NAME@host:port``) and the call-setup times (INVITE → 180, INVITE → 200)
with SIPp's own response-time timers. Used by the fail-open and two-instance tests and by
scripts/bench_setup.py."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port, rtp_block
from tests.sip.sipp import caller_ack, caller_bye, reply

SEAT_UA = "fenliu-test-seat"
SEAT = "sip:seat@"  # the seat's Contact; a worker's is sip:fenliu-NAME@host:port
WORKER = "sip:fenliu-"
CONTACT_URI = "sip:[A-Za-z0-9._+-]+@[0-9A-Za-z.-]+:[0-9]+"
RTD_RING, RTD_ANSWER = "1", "2"  # SIPp response-time timers: INVITE -> 180, INVITE -> 200


def seat_scenario(require_failopen: bool = False, ring_ms: int = 0, answer_headers: str = "") -> str:
    """Answer every INVITE: 180, (``ring_ms``), 200 with SDP and ``User-Agent: fenliu-test-seat``;
    then wait for the BYE. The answer names one codec (PCMA): with several, pjsua2 (a fenliu
    worker dialling the seat) sends a re-INVITE to lock one, which this scenario does not take. ``require_failopen``: an INVITE without ``X-Fenliu-Failopen`` fails
    the call at the seat (it is never answered, so the caller fails too). ``answer_headers``: more
    header lines for the 200 (an ACD naming its agent: P-Asserted-Identity, X-Agent-Id …)."""
    check = ""
    if require_failopen:
        check = """
    <action>
      <ereg regexp="workers unavailable" search_in="hdr" header="X-Fenliu-Failopen:" check_it="true"
            assign_to="failopen"/>
      <log message="failopen [$failopen] [call_id]"/>
    </action>"""
    ring = f'<pause milliseconds="{ring_ms}"/>' if ring_ms else ""
    extra = "".join(f"\n      {line.strip()}" for line in answer_headers.splitlines() if line.strip())
    to = "[last_To:];tag=[pid]seat[call_number]"
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="seat">
  <recv request="INVITE" crlf="true">{check}
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      {to}
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:seat@[local_ip]:[local_port]>
      User-Agent: {SEAT_UA}
      Content-Length: 0
    ]]>
  </send>
  {ring}
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      {to}
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:seat@[local_ip]:[local_port]>
      User-Agent: {SEAT_UA}{extra}
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=seat 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=sendrecv
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  {reply("200 OK")}
</scenario>
"""


def answered_by_caller(talk_ms: int = 500, expect: str = "", need_ring: bool = False, user: str = "110") -> str:
    """A caller without media that logs ``answered-by <Contact URI of the 200>`` per call and times
    INVITE → 180 (rtd 1) and INVITE → 200 (rtd 2). ``expect``: a prefix the 200's Contact URI
    must have (``SEAT``, ``WORKER``, ``sip:fenliu-w0@127.0.0.1:5070``), or the call fails.
    ``need_ring``: a call without 180 fails."""
    regexp = CONTACT_URI if not expect else expect.replace(".", "[.]") + ("([^0-9]|$)" if expect[-1].isdigit() else "")
    check = f' check_it="true" regexp="{regexp}"' if expect else f' regexp="{regexp}"'
    headers = f"""From: "caller" <sip:13800000000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{user}@[remote_ip]:[remote_port]>"""
    ring_optional = "" if need_ring else ' optional="true"'
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="answered-by caller">
  <nop start_rtd="{RTD_ANSWER}"/>
  <send retrans="500" start_rtd="{RTD_RING}">
    <![CDATA[
      INVITE sip:{user}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {headers}
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:13800000000@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 0
      a=rtpmap:8 PCMA/8000
      a=rtpmap:0 PCMU/8000
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180"{ring_optional} rtd="{RTD_RING}"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="{RTD_ANSWER}" rrs="true">
    <action>
      <ereg search_in="hdr" header="Contact:"{check} assign_to="who"/>
      <ereg search_in="hdr" header="Contact:" regexp="{CONTACT_URI}" assign_to="contact"/>
      <log message="answered-by [$contact] [call_id] [$who]"/>
    </action>
  </recv>
  {caller_ack(headers)}
  <pause milliseconds="{talk_ms}"/>
  {caller_bye(headers, 2)}
</scenario>
"""


class SippSeat:
    """A SIPp seat on 127.0.0.1 that answers calls until stopped."""

    def __init__(self, work: Path, require_failopen: bool = False, ring_ms: int = 0, port: int = 0,
                 trace: bool = False, answer_headers: str = "") -> None:
        assert shutil.which("sipp"), "SIPp is required (apt-get install sip-tester)"
        self.port = port or free_port(2)
        self.uri = f"sip:seat@127.0.0.1:{self.port}"
        self.dir = work / f"seat-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        xml = self.dir / "seat.xml"
        xml.write_text(seat_scenario(require_failopen, ring_ms, answer_headers), encoding="utf-8")
        cmd = ["sipp", "-sf", str(xml), "-i", "127.0.0.1", "-p", str(self.port), "-mp", str(rtp_block()),
               "-nostdin", "-trace_err", "-error_file", str(self.dir / "errors.log"),
               "-trace_logs", "-log_file", str(self.dir / "log.txt")]
        if trace:
            cmd += ["-trace_msg", "-message_file", str(self.dir / "messages.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        deadline = time.monotonic() + 10
        while True:  # ready when it holds its port
            if self.proc.poll() is not None:
                raise RuntimeError(f"SIPp seat exited ({self.proc.returncode}): {self.errors()[-800:]}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", self.port))
                except OSError:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("SIPp seat did not start")
            time.sleep(0.05)

    def errors(self) -> str:
        p = self.dir / "errors.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class CallerRun:
    returncode: int
    stdout: str
    answered_by: list[str] = field(default_factory=list)  # one Contact URI per answered call
    ring_ms: list[float] = field(default_factory=list)  # INVITE sent -> 180 received, per call (µs trace)
    answer_ms: list[float] = field(default_factory=list)  # INVITE sent -> 200 received, per call (µs trace)
    rtd_ring_ms: list[float] = field(default_factory=list)  # the same from SIPp's rtd timers (1 ms ticks)
    rtd_answer_ms: list[float] = field(default_factory=list)
    sent_at: dict[str, float] = field(default_factory=dict)  # Call-ID -> when its INVITE left (epoch s)
    contact_of: dict[str, str] = field(default_factory=dict)  # Call-ID -> who answered it
    answer_ms_of: dict[str, float] = field(default_factory=dict)  # Call-ID -> INVITE -> 200
    errors: str = ""

    def count(self, prefix: str) -> int:
        return sum(1 for ua in self.answered_by if ua.startswith(prefix))


def run_caller(target_port: int, work: Path, calls: int = 1, rate: float = 10, limit: int | None = None,
               talk_ms: int = 500, expect: str = "", need_ring: bool = False, timeout: float = 60,
               name: str = "caller") -> CallerRun:
    """``calls`` SIPp calls to 127.0.0.1:``target_port``, ``limit`` at a time (default: all)."""
    assert shutil.which("sipp"), "SIPp is required (apt-get install sip-tester)"
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*"):
        old.unlink()
    xml = d / "caller.xml"
    xml.write_text(answered_by_caller(talk_ms, expect, need_ring), encoding="utf-8")
    cmd = ["sipp", f"127.0.0.1:{target_port}", "-sf", str(xml), "-m", str(calls), "-r", str(rate),
           "-l", str(limit or calls), "-i", "127.0.0.1", "-p", str(free_port(2)), "-mp", str(rtp_block()),
           "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin", "-trace_err", "-aa",
           "-error_file", str(d / "errors.log"), "-trace_logs", "-log_file", str(d / "log.txt"),
           "-trace_rtt", "-rtt_freq", "1", "-trace_msg", "-message_file", str(d / "messages.log")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 15, cwd=d)
    out = CallerRun(r.returncode, r.stdout)
    log = d / "log.txt"
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("answered-by "):
                parts = line.split(" ")
                out.answered_by.append(parts[1])
                if len(parts) > 2:
                    out.contact_of[parts[2]] = parts[1]
    for rtt in d.glob("*_rtt.csv"):
        for line in rtt.read_text().splitlines()[1:]:
            parts = line.strip().split(";")
            if len(parts) >= 3 and parts[1]:
                (out.rtd_ring_ms if parts[2] == RTD_RING else out.rtd_answer_ms).append(float(parts[1]))
    if (d / "messages.log").exists():
        for call_id, (sent, ring, answer) in setup_times(d / "messages.log").items():
            out.sent_at[call_id] = sent / 1000
            if ring is not None:
                out.ring_ms.append(ring)
            if answer is not None:
                out.answer_ms.append(answer)
                out.answer_ms_of[call_id] = answer
    err = d / "errors.log"
    out.errors = err.read_text(errors="replace")[-2000:] if err.exists() else ""
    return out


def setup_times(messages_log: Path) -> dict[str, tuple[float, float | None, float | None]]:
    """Per Call-ID: (INVITE sent, epoch ms; INVITE → first 180, ms; INVITE → first 200 to the
    INVITE, ms), from the microsecond timestamps of SIPp's message trace (``-trace_msg``)."""
    from datetime import datetime

    sent: dict[str, float] = {}
    ring: dict[str, float] = {}
    answer: dict[str, float] = {}
    text = messages_log.read_text(errors="replace")
    for block in text.split("-----------------------------------------------")[1:]:
        head, _, rest = block.partition("\n")
        try:
            t = datetime.strptime(head.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp() * 1000
        except ValueError:
            continue
        lines = [x.strip() for x in rest.splitlines() if x.strip()]
        if len(lines) < 2:
            continue
        direction, first = lines[0], lines[1]
        call_id = next((x.split(":", 1)[1].strip() for x in lines if x.lower().startswith("call-id:")), "")
        cseq = next((x.split(":", 1)[1].strip() for x in lines if x.lower().startswith("cseq:")), "")
        if direction.startswith("UDP message sent") and first.startswith("INVITE "):
            sent.setdefault(call_id, t)
        elif direction.startswith("UDP message received") and cseq.endswith("INVITE"):
            if first.startswith("SIP/2.0 180"):
                ring.setdefault(call_id, t)
            elif first.startswith("SIP/2.0 200"):
                answer.setdefault(call_id, t)
    return {c: (t0, ring[c] - t0 if c in ring else None, answer[c] - t0 if c in answer else None)
            for c, t0 in sent.items()}
