"""SIPp scenarios for the tests, written out with literal paths (SIPp does not substitute
the rtp_stream path from [fields])."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import free_port, rtp_block, sox

CALLER_HEADERS = """From: "caller" <sip:13800000000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:USER@[remote_ip]:[remote_port]>"""


def reply(status: str, to_tag: bool = False, headers: str = "") -> str:
    """A response to the last request received (``status`` like "200 OK")."""
    to = "[last_To:];tag=[pid]reg[call_number]" if to_tag else "[last_To:]"
    extra = "".join(f"\n      {h}" for h in headers.splitlines() if h.strip())
    return f"""<send>
    <![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      {to}
      [last_Call-ID:]
      [last_CSeq:]{extra}
      Content-Length: 0
    ]]>
  </send>"""


def alaw_file(wav: Path, out_dir: Path) -> Path:
    out = out_dir / (wav.stem + ".al")
    sox(str(wav), "-r", "8000", "-c", "1", "-e", "a-law", "-t", "raw", str(out))
    return out


def caller_ack(headers: str, cseq: int | str = 1, body: str = "Content-Length: 0") -> str:
    """The caller's ACK to the 200 of its INVITE (``headers``: its From/To lines; ``cseq``: the
    INVITE's; ``body``: an SDP answer when the INVITE had no offer)."""
    return f"""<send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {headers}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Contact: sip:13800000000@[local_ip]:[local_port]
      Max-Forwards: 70
      {body}
    ]]>
  </send>"""


def caller_bye(headers: str, cseq: int) -> str:
    """The caller hangs up and waits for the 200."""
    return f"""<send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {headers}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} BYE
      Contact: sip:13800000000@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>"""


def caller_scenario(audio: Path | None, talk_ms: int, codecs: str = "8 0 101", user: str = "110",
                    sdp: str | None = None, callee_hangs_up: bool = False, middle: str = "",
                    bye_cseq: int = 4) -> str:
    rtpmaps = {"8": "a=rtpmap:8 PCMA/8000", "0": "a=rtpmap:0 PCMU/8000", "101": "a=rtpmap:101 telephone-event/8000",
               "99": "a=rtpmap:99 OPUS/48000/2"}
    sdp_maps = "\n      ".join(rtpmaps[c] for c in codecs.split())
    headers = CALLER_HEADERS.replace("USER", user)
    body = sdp if sdp is not None else f"""v=0
      o=caller 53655765 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP {codecs}
      {sdp_maps}
      a=sendrecv"""
    stream = f'<nop><action><exec rtp_stream="{audio},1,8"/></action></nop>' if audio else ""
    if callee_hangs_up:
        ending = '<recv request="BYE"/>\n  ' + reply("200 OK")
    else:
        ending = f"""<pause milliseconds="{talk_ms}"/>
  {caller_bye(headers, bye_cseq)}"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="fenliu caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:{user}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {headers}
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:13800000000@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      {body}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  {caller_ack(headers)}
  {stream}
  {middle}
  {ending}
</scenario>
"""


def talking_caller(audio: Path | None, **kw: Any) -> str:
    """A SIPp caller that talks (its audio looped, or silence) until it gets a BYE: a test that
    acts during the call ends it itself when done, so a busy machine cannot cut its actions short."""
    scen = caller_scenario(audio, 0, callee_hangs_up=True, **kw)
    return scen.replace(f"{audio},1,8", f"{audio},-1,8") if audio else scen


def repeated_invite_scenario(talk_ms: int = 1500) -> str:
    """A call whose INVITE arrives a second time after the ACK (same Call-ID, tag, CSeq and
    branch: a retransmission that crossed our 200). It must not become a second call."""
    base = caller_scenario(None, talk_ms=talk_ms).replace("branch=[branch]", "branch=z9hG4bK-rep-[call_number]", 1)
    invite = base[base.index('<send retrans="500">'):base.index("</send>") + len("</send>")]
    ack_end = base.index("</send>", base.index("ACK [next_url]")) + len("</send>")
    again = invite.replace('<send retrans="500">', "<send>")
    return base[:ack_end] + "\n  " + again + '\n  <recv response="100" optional="true"/>\n  <recv response="482"/>\n' + base[ack_end:]


def no_sdp_scenario() -> str:
    """An INVITE without SDP (we offer in the 200) and an ACK without SDP (no answer): the
    call is up with no audio stream. The worker must end it (BYE) after the media timeout."""
    headers = CALLER_HEADERS.replace("USER", "110")
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="no sdp">
  <send retrans="500">
    <![CDATA[
      INVITE sip:110@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {headers}
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:13800000000@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  {caller_ack(headers)}
  <recv request="BYE"/>
  {reply("200 OK")}
</scenario>
"""


def stray_bye_scenario() -> str:
    """A BYE for a dialog that does not exist: the answer must be 481."""
    return """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="stray bye">
  <send retrans="500">
    <![CDATA[
      BYE sip:110@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:13800000000@[local_ip]:[local_port]>;tag=nosuch[call_number]
      To: <sip:110@[remote_ip]:[remote_port]>;tag=nosuchtoo
      Call-ID: [call_id]
      CSeq: 7 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="481"/>
</scenario>
"""


def sipp_command(scenario: str, target_port: int, work: Path, calls: int = 1, rate: int = 1,
                 timeout: float = 60, local_ip: str = "127.0.0.1", limit: int = 0,
                 extra: tuple[str, ...] = ()) -> list[str]:
    """SIPp as a caller (``-aa``: it answers in-dialog INFO, NOTIFY, OPTIONS and UPDATE with 200,
    as a phone does)."""
    assert shutil.which("sipp"), "SIPp is required (apt-get install sip-tester)"
    xml = work / "scenario.xml"
    xml.write_text(scenario, encoding="utf-8")
    return ["sipp", f"127.0.0.1:{target_port}", "-sf", str(xml), "-m", str(calls), "-r", str(rate),
            "-l", str(limit or calls), "-i", local_ip, "-p", str(free_port(2)), "-mp", str(rtp_block()),
            "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin", "-trace_err", "-aa",
            "-error_file", str(work / "sipp-errors.log"), *extra]


def run_sipp(scenario: str, target_port: int, work: Path, calls: int = 1, rate: int = 1,
             timeout: float = 60, local_ip: str = "127.0.0.1", limit: int = 0,
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``extra``: more SIPp options, e.g. ("-cid_str", "same@pbx") for a PBX that reuses a Call-ID."""
    cmd = sipp_command(scenario, target_port, work, calls, rate, timeout, local_ip, limit, extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 15, cwd=work)


def start_sipp(scenario: str, target_port: int, work: Path, timeout: float = 60) -> subprocess.Popen[str]:
    """A SIPp caller in the background (a test may stop it with SIGSTOP: a caller whose network died)."""
    return subprocess.Popen(sipp_command(scenario, target_port, work, timeout=timeout), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True, cwd=work)


def dtmf_info(digit: str) -> str:
    """An in-dialog SIP INFO carrying one DTMF digit (application/dtmf-relay)."""
    return f"""<send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {CALLER_HEADERS.replace("USER", "110")}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 INFO
      Contact: sip:13800000000@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=160
    ]]>
  </send>
  <recv response="200"/>"""


def dtmf_rfc4733(digit: str) -> str:
    """RFC 4733 telephone-event packets from SIPp's own capture of one digit."""
    return f'<nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_{digit}.pcap"/></action></nop>'


def registrar_scenario(user: str, password: str, expires: int, refreshes: int) -> str:
    """A registrar that challenges (401), checks the digest answer (403 if wrong), accepts
    with a short Expires, then answers ``refreshes`` refresh REGISTERs."""
    ok = reply("200 OK", to_tag=True, headers=f"[last_Contact:];expires={expires}\nExpires: {expires}")
    refresh = "\n  ".join(f'<recv request="REGISTER"/>\n  {ok}' for _ in range(refreshes))
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="registrar">
  <recv request="REGISTER"/>
  {reply("401 Unauthorized", to_tag=True,
         headers='WWW-Authenticate: Digest realm="fenliu-test", nonce="[pid]n[call_number]x", algorithm=MD5')}
  <recv request="REGISTER">
    <action>
      <verifyauth assign_to="authvalid" username="{user}" password="{password}"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="goodauth"/>
  {reply("403 Forbidden", to_tag=True).replace("<send>", '<send next="done">', 1)}
  <label id="goodauth"/>
  {ok}
  {refresh}
  <label id="done"/>
</scenario>
"""


def start_sipp_server(scenario: str, port: int, work: Path, timeout: float = 60) -> subprocess.Popen[str]:
    """SIPp as a server (a registrar, a misbehaving hotline) on 127.0.0.1:port, handling one dialog."""
    xml = work / f"server-{port}.xml"
    xml.write_text(scenario, encoding="utf-8")
    return subprocess.Popen(["sipp", "-sf", str(xml), "-p", str(port), "-i", "127.0.0.1", "-m", "1",
                             "-mp", str(rtp_block()), "-timeout", f"{int(timeout)}s", "-nostdin", "-trace_err",
                             "-error_file", str(work / f"server-{port}-errors.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=work)


def refer_without_notify(audio: Path | None) -> str:
    """A caller that accepts a REFER (202) and then never sends a NOTIFY."""
    middle = '<recv request="REFER"/>\n  ' + reply("202 Accepted") + '\n  <pause milliseconds="4000"/>'
    return caller_scenario(audio, talk_ms=500, middle=middle)


def caller_reinvite(headers: str, cseq: int | str, direction: str = "sendrecv", codecs: str = "8 0 101",
                    port_shift: int = 0, version: int | str = 2, with_sdp: bool = True) -> str:
    """The caller re-INVITEs within its dialog (hold: ``sendonly``/``inactive``, unhold, another
    codec order, RTP on another port, or no SDP at all) and ACKs the 200. The SDP answer to a
    re-INVITE without SDP comes in the 200; its ACK then carries SIPp's offer again."""
    rtpmaps = {"8": "a=rtpmap:8 PCMA/8000", "0": "a=rtpmap:0 PCMU/8000", "101": "a=rtpmap:101 telephone-event/8000",
               "9": "a=rtpmap:9 G722/8000"}
    media_port = f"[media_port+{port_shift}]" if port_shift else "[media_port]"
    sdp = f"""v=0
      o=caller 53655765 {version} IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio {media_port} RTP/AVP {codecs}
      {chr(10).join("      " + rtpmaps[c] for c in codecs.split()).lstrip()}
      a={direction}"""
    body = f"Content-Type: application/sdp\n      Content-Length: [len]\n\n      {sdp}" if with_sdp else \
        "Content-Length: 0"
    ack_body = f"Content-Type: application/sdp\n      Content-Length: [len]\n\n      {sdp}" if not with_sdp else \
        "Content-Length: 0"
    return f"""<send retrans="500">
    <![CDATA[
      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {headers}[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: sip:13800000000@[local_ip]:[local_port]
      Max-Forwards: 70
      {body}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  {caller_ack(headers, cseq, ack_body)}"""


def reinvite_storm(headers: str, pairs: int, gap_ms: int = 0, hold_with: str = "sendonly") -> str:
    """``pairs`` hold (sendonly) / unhold (sendrecv) re-INVITEs back to back (or ``gap_ms`` apart),
    as a SIPp loop (SIPp refuses a scenario file over 64 KB). SIPp's own ``[cseq]`` counts the
    requests up (its ACK repeats the number answered); the caller's BYE afterwards must use a
    higher CSeq than the last re-INVITE."""
    pause = f'<pause milliseconds="{gap_ms}"/>' if gap_ms else ""
    hold = caller_reinvite(headers, "[cseq]", hold_with, version="[cseq]").replace(
        "CSeq: [cseq] ACK", "CSeq: [last_cseq_number] ACK")
    unhold = hold.replace(f"a={hold_with}", "a=sendrecv")
    return f"""<nop><action><assign assign_to="k" value="0"/></action></nop>
  <label id="9"/>
  {hold}
  {pause}
  <nop><action><add assign_to="k" value="1"/>
    <test assign_to="more" variable="k" compare="less_than" value="{pairs}"/></action></nop>
  {unhold}
  {pause}
  <nop next="9" test="more"/>"""


HOTLINE_SDP = """v=0
      o=hotline 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 0
      a=rtpmap:8 PCMA/8000
      a=rtpmap:0 PCMU/8000
      a=sendrecv"""


def uas_reply(status: str, sdp: bool = False) -> str:
    """The hotline's response to the INVITE it received (with its to-tag, optionally with SDP)."""
    body = f"Content-Type: application/sdp\n      Content-Length: [len]\n\n      {HOTLINE_SDP}" if sdp else \
        "Content-Length: 0"
    return f"""<send>
    <![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]hot[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:12345@[local_ip]:[local_port]>
      {body}
    ]]>
  </send>"""


def early_media_then(final: str, ring_ms: int = 1500) -> str:
    """A hotline (carrier, ACD) that answers the INVITE with 183 + SDP — ringback or an
    announcement — and then refuses it with ``final`` (e.g. "486 Busy Here")."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="hotline: early media, then {final}">
  <recv request="INVITE" rrs="true"/>
  {uas_reply("183 Session Progress", sdp=True)}
  <pause milliseconds="{ring_ms}"/>
  {uas_reply(final)}
  <recv request="ACK"/>
</scenario>
"""


def answer_then_bye(after_ms: int) -> str:
    """A hotline that answers (200 + SDP) and hangs up ``after_ms`` later."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="hotline: answers, hangs up after {after_ms} ms">
  <recv request="INVITE" rrs="true"/>
  {uas_reply("200 OK", sdp=True)}
  <recv request="ACK">
    <action><ereg regexp=".*" search_in="hdr" header="From:" assign_to="peer"/></action>
  </recv>
  <pause milliseconds="{after_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:12345@[local_ip]:[local_port]>;tag=[pid]hot[call_number]
      To: [$peer]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Contact: <sip:12345@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""
