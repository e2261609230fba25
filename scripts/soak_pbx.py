#!/usr/bin/env python3
"""PBX-behaviour soak: one SIP worker takes a long mix of the calls real PBXs, carriers and
ACDs make, and must not drop a caller, go deaf, or grow.

    python scripts/soak_pbx.py --calls 300            # the full soak (README, issue 18)
    python scripts/soak_pbx.py --calls 50             # the short version CI runs

Each call is one of (in turn): plain, hold/unhold (a=inactive with the RTP paused), a burst of 20
hold/unhold re-INVITEs 150 ms apart, a codec-order change, RTP moved to another port, a
re-INVITE without SDP, a silent caller (no RTP for twice the media timeout, answering the OPTIONS
probe), a transfer to a hotline that plays early media and then refuses (183 → 486), and a
transfer to a hotline that answers and hangs up at once. Every caller is a SIPp scenario that
talks and then hangs up itself; a BYE from us first fails the scenario.

Printed per batch: calls, callers dropped by us (a scenario that failed, or a call fenliu
ended), deaf calls (the caller's frames that reached recognition < 95 % of the call's
answered time, calls with a silent stretch excluded), the worst frame ratio, failed transfers
that kept the caller, worker RSS and open fds. Exit status 0 when nobody was dropped, nobody
went deaf and RSS/fds stayed within bounds after the first batch (RSS +50 MB, fds +10).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import table  # noqa: E402  (scripts/bench.py, this folder)
from soak import MAX_FD_GROWTH, MAX_RSS_GROWTH_MB, open_fds, rss_mb  # noqa: E402  (the call soak's bounds and probes)

from fenliu.sip import protocol as P  # noqa: E402
from fenliu.sip.link import WorkerLink  # noqa: E402
from tests.conftest import FIXTURES, free_port, rtp_block  # noqa: E402
from tests.sip.sipp import (  # noqa: E402
    CALLER_HEADERS,
    alaw_file,
    answer_then_bye,
    caller_reinvite,
    caller_scenario,
    early_media_then,
    reinvite_storm,
    run_sipp,
    start_sipp_server,
)

WAV = FIXTURES / "ko" / "ko-02-help.wav"
HEADERS = CALLER_HEADERS.replace("USER", "110")
MEDIA_TIMEOUT = 1.0
MIN_RATIO = 0.95
KINDS = ("plain", "hold", "burst", "codec", "port", "no-sdp", "silent", "early-media", "fast-hangup")
HEADER = ["calls", "dropped", "deaf", "worst ratio", "kept after failed transfer", "worker RSS MB", "open fds",
          "batch s"]


def middle_of(kind: str) -> str:
    """What the caller does between its ACK and its BYE."""
    talk = '<pause milliseconds="1200"/>'
    if kind == "hold":
        return (f'{talk}\n  {caller_reinvite(HEADERS, 2, "inactive", version=2)}\n'
                '  <nop><action><exec rtp_stream="pause"/></action></nop>\n  <pause milliseconds="2500"/>\n'
                f'  {caller_reinvite(HEADERS, 3, "sendrecv", version=3)}\n'
                '  <nop><action><exec rtp_stream="resume"/></action></nop>\n  ' + talk)
    if kind == "burst":
        return f"{talk}\n  {reinvite_storm(HEADERS, 10, gap_ms=150)}\n  {talk}"  # 20, as fast as the bound takes
    if kind == "codec":
        return f'{talk}\n  {caller_reinvite(HEADERS, 2, codecs="0 8 101", version=2)}\n  {talk}'
    if kind == "port":
        return f'{talk}\n  {caller_reinvite(HEADERS, 2, port_shift=2, version=2)}\n  {talk}'
    if kind == "no-sdp":
        return f'{talk}\n  {caller_reinvite(HEADERS, 2, with_sdp=False, version=2)}\n  {talk}'
    if kind == "silent":
        return (f'{talk}\n  <nop><action><exec rtp_stream="pause"/></action></nop>\n'
                f'  <pause milliseconds="{int(MEDIA_TIMEOUT * 2500)}"/>\n'
                '  <nop><action><exec rtp_stream="resume"/></action></nop>\n  ' + talk)
    return '<pause milliseconds="3000"/>'  # plain, and the transfers (done from our side meanwhile)


@dataclass
class Soak:
    link: WorkerLink
    work: Path
    audio: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0

    def one(self, kind: str) -> dict[str, object]:
        with self.lock:
            self.seq += 1
            n = self.seq
        work = self.work / f"call-{n}"
        work.mkdir(parents=True)
        last_cseq = {"burst": 30, "hold": 10, "codec": 10, "port": 10, "no-sdp": 10}.get(kind, 4)
        scen = caller_scenario(self.audio, 0, middle=middle_of(kind), bye_cseq=last_cseq)
        scen = scen.replace(f"{self.audio},1,8", f"{self.audio},-1,8")
        hotline = None
        if kind in ("early-media", "fast-hangup"):
            port = free_port(2)
            hotline = start_sipp_server(early_media_then("486 Busy Here", 800) if kind == "early-media"
                                        else answer_then_bye(200), port, work)
        mark = self.link.mark()
        result: dict[str, object] = {"kind": kind}
        box: dict[str, object] = {}
        sip_call_id = f"soak-{n}@127.0.0.1"  # SIPp's Call-ID for this call: how its facts are found
        caller = threading.Thread(target=lambda: box.setdefault("r", run_sipp(
            scen, self.link.sip_port, work, timeout=60, extra=("-cid_str", sip_call_id))))
        caller.start()
        try:
            started = self.link.wait(lambda f: isinstance(f, P.CallStarted) and f.sip_call_id == sip_call_id, 30,
                                     since=mark)
            cid = started.call_id
            if hotline is not None:
                self.link.wait(lambda f: isinstance(f, P.CallAnswered) and f.call_id == cid, 20, since=mark)
                self.link.send(P.Transfer(cid, f"sip:12345@127.0.0.1:{port}", P.TransferMode.THREE_WAY,
                                          timeout=10, min_talk=2.0))
                failed = self.link.wait(lambda f: isinstance(f, P.TransferUpdate) and f.call_id == cid
                                        and f.step == P.TransferStep.FAILED, 20, since=mark)
                result["kept"] = True
                result["why"] = failed.reason
            caller.join(90)
            r = box.get("r")
            ended = self.link.wait(lambda f: isinstance(f, P.CallEnded) and f.call_id == cid, 30, since=mark)
            seconds = max(ended.t - started.t, 0.02)  # answer mode: answered as it started
            result["ratio"] = ended.frames * 0.02 / seconds
            dropped = (r is None or r.returncode != 0  # type: ignore[attr-defined]
                       or ended.reason.startswith("fenliu:"))
            result["dropped"] = dropped
            if dropped:
                result["why"] = ended.reason if ended.reason.startswith("fenliu:") else \
                    (r.stdout[-400:] if r is not None else "no result")  # type: ignore[attr-defined]
        finally:
            if hotline is not None:
                hotline.kill()
                hotline.wait()
        return result


def run_soak(calls: int, batch: int = 50, concurrency: int = 2, out=print) -> tuple[bool, list[str]]:
    """The soak; returns (ok, reasons it is not)."""
    with tempfile.TemporaryDirectory(prefix="fenliu-soak-pbx-") as tmp:
        work = Path(tmp)
        link = WorkerLink.loopback("soak", free_port(2), rtp_block(), on_frame=lambda *frame: None,
                                   media_timeout=MEDIA_TIMEOUT)
        link.start()
        soak = Soak(link, work, alaw_file(WAV, work))
        pid = link.ready.pid if link.ready else 0
        rows, reasons = [], []
        base: tuple[float, int] | None = None
        done = 0
        try:
            with ThreadPoolExecutor(concurrency) as pool:
                while done < calls:
                    n = min(batch, calls - done)
                    t0 = time.monotonic()
                    results = list(pool.map(soak.one, [KINDS[(done + i) % len(KINDS)] for i in range(n)]))
                    done += n
                    dropped = [r for r in results if r.get("dropped")]
                    hearing = [r for r in results if r["kind"] != "silent"]
                    deaf = [r for r in hearing if float(r.get("ratio", 0)) < MIN_RATIO]  # type: ignore[arg-type]
                    worst = min((float(r.get("ratio", 0)) for r in hearing), default=1.0)  # type: ignore[arg-type]
                    rss, fds = rss_mb(pid), open_fds(pid)
                    rows.append([done, len(dropped), len(deaf), f"{worst:.3f}",
                                 sum(1 for r in results if r.get("kept")), f"{rss:.1f}", fds,
                                 f"{time.monotonic() - t0:.1f}"])
                    out("  ".join(f"{h}={v}" for h, v in zip(HEADER, rows[-1], strict=True)))
                    for r in dropped:
                        reasons.append(f"dropped ({r['kind']}): {r.get('why')}")
                    for r in deaf:
                        reasons.append(f"deaf ({r['kind']}): frames {float(r['ratio']):.2f} of the call")  # type: ignore[arg-type]
                    if base is None:
                        base = (rss, fds)
                    elif rss - base[0] > MAX_RSS_GROWTH_MB or fds - base[1] > MAX_FD_GROWTH:
                        reasons.append(f"worker grew: RSS {base[0]:.1f} → {rss:.1f} MB, fds {base[1]} → {fds}")
            if link.proc is not None and link.proc.poll() is not None:
                reasons.append(f"the worker died (exit {link.proc.returncode})")
        finally:
            link.stop()
        table(f"PBX-behaviour soak: {done} calls, {concurrency} at a time, media_timeout {MEDIA_TIMEOUT:g} s",
              HEADER, rows)
        return not reasons, reasons


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=2, help="calls at once (a worker admits 2 in answer mode)")
    args = ap.parse_args()
    ok, reasons = run_soak(args.calls, args.batch, args.concurrency)
    for r in reasons:
        print("✘", r)
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
