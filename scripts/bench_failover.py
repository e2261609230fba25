#!/usr/bin/env python3
"""Failure benchmark: how fast a dead instance's callers are released, and how a database outage
is caught up.

    .venv/bin/python scripts/bench_failover.py                  # 3 kills, a 30 s outage
    .venv/bin/python scripts/bench_failover.py --kills 5 --outage 10

1. **Instance lost.** Two real `fenliu serve` (one SIP worker each, the Korean test model in
   threads mode) on a throw-away PostgreSQL (``tests.pg.start_cluster``, fsync off). A pjsua2 peer
   calls instance B; once B has answered, B's process group is killed -9. Time = kill → the
   caller's peer sees the BYE instance A sent from B's persisted dialog (its "ended" event).
   B is started again for the next round (it finds nothing left to close). The floor is the
   detection threshold (a peer silent for 4 s, heartbeats every second): the "× threshold" column.
2. **Database outage.** A store on its own throw-away cluster, as `fenliu serve` opens it
   (``journal=True``). Baseline: N calls' records (CallStarted, three finals, a decision,
   CallEnded) written with the database up. Then the server is halted for ``--outage`` s while
   calls go on at ``--rate`` records per second (they wait in memory and in the journal); it is
   started again and the next record writes all that waited. Catch-up = restart → the last
   waiting record written; records/s against the baseline's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import cpu_model, table  # noqa: E402

from fenliu.bus import CallEvent, WorkerFact  # noqa: E402
from fenliu.events import Decision, FinalTranscript  # noqa: E402
from fenliu.sip import protocol as P  # noqa: E402
from fenliu.store.record import Store  # noqa: E402
from tests.conftest import free_port, rtp_block  # noqa: E402
from tests.pg import start_cluster  # noqa: E402
from tests.sip.peers import PeerProc  # noqa: E402
from tests.sip.test_two_instances import Proc, event  # noqa: E402

LOST_AFTER = 4.0  # fenliu.console.centre.Centre.lost_after


def serve(url: str, name: str, work: Path) -> tuple[Proc, int]:
    """`fenliu serve` with one SIP worker on the store ``url``; the process and its SIP port."""
    port, console = free_port(2), free_port()
    cfg = work / "answer.toml"
    targets = "".join(f'{t} = "sip:{t}@127.0.0.1:9"\n' for t in ("12345", "12348", "12328", "12338", "95598",
                                                                  "social"))
    cfg.write_text(f'[sip]\nusers = "110"\nworkers = 1\nmedia_timeout = 0\n[store]\nurl = "{url}"\n'
                   f'[asr]\nmodel = "ko-test"\nmode = "threads"\n[transfer.targets]\n{targets}', encoding="utf-8")
    env = {**os.environ, "FENLIU_CONFIG": str(cfg), "FENLIU_SIP__PORT": str(port),
           "FENLIU_SIP__RTP_PORT": str(rtp_block(40)), "FENLIU_CONSOLE__PORT": str(console),
           "FENLIU_STORE__INSTANCE": name}
    return Proc([sys.executable, "-m", "fenliu", "serve", "--json"], env), port


def instance_lost(kills: int) -> list[float]:
    cluster = start_cluster()
    out = []
    try:
        url = cluster.url()
        with tempfile.TemporaryDirectory(prefix="fenliu-bench-fo-") as tmp:
            work = Path(tmp)
            a, _ = serve(url, "A", work)
            a.wait_for(event("ready"), timeout=120)
            try:
                for i in range(kills):
                    b, b_port = serve(url, "B", work)
                    try:
                        b.wait_for(event("ready"), timeout=120)
                        caller = PeerProc("--call", f"sip:110@127.0.0.1:{b_port}", user=f"1390000{i:04d}")
                        try:
                            b.wait_for(event("call_answered"), timeout=30)
                            mark = caller.mark()
                            b.kill_group()
                            t0 = time.monotonic()
                            caller.wait(lambda e: e["event"] == "ended", 60, since=mark)
                            out.append(time.monotonic() - t0)
                            print(f"  kill {i + 1}: BYE after {out[-1]:.2f} s", file=sys.stderr, flush=True)
                        finally:
                            caller.stop()
                    finally:
                        b.stop()
            finally:
                a.stop()
    finally:
        cluster.stop()
    return out


def records(store: Store, n: int, start: int) -> None:
    for k in range(start, start + n):
        cid = f"bench-{k}"
        items = [WorkerFact("w0", P.CallStarted(cid, 0, f"<sip:1380000{k:04d}@pbx>", "<sip:110@fenliu>"))]
        items += [CallEvent(cid, "caller", "w0", FinalTranscript(cid, u, "楼上装修太吵了", 0.0, 1.0)) for u in (1, 2, 3)]
        items.append(CallEvent(cid, "caller", "w0", Decision(cid, 3, "12345", "noise", "噪音扰民", 0.9, (), (), False,
                                                                "bench")))
        items.append(WorkerFact("w0", P.CallEnded(cid, 0, 200, "BYE")))
        for item in items:
            store.record(item)


def outage(seconds: float, rate: float, baseline_calls: int) -> dict:
    cluster = start_cluster()
    try:
        with tempfile.TemporaryDirectory(prefix="fenliu-bench-out-") as tmp:
            os.chdir(tmp)
            store = Store(cluster.url(), journal=True)
            t0 = time.perf_counter()
            records(store, baseline_calls, 0)
            base_rate = baseline_calls * 6 / (time.perf_counter() - t0)
            cluster.halt()
            per_call = 6
            calls = 0
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:  # calls go on at `rate` records/s
                records(store, 1, baseline_calls + calls)
                calls += 1
                time.sleep(per_call / rate)
            waiting = store.waiting
            journal_kb = store.journal.path.stat().st_size / 1024 if store.journal and store.journal.path.exists() else 0
            cluster.restart()
            t1 = time.perf_counter()
            while store.flush():
                time.sleep(0.05)
            catch_up = time.perf_counter() - t1
            stored = store.db.scalar("SELECT COUNT(*) FROM calls")
            store.close()
            os.chdir(ROOT)
            return {"waiting": waiting, "calls": calls, "catch_up": catch_up, "rate": waiting / catch_up if catch_up
                    else 0.0, "base_rate": base_rate, "stored": stored, "expected": baseline_calls + calls,
                    "journal_kb": journal_kb}
    finally:
        cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--outage", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=60.0, help="records per second during the outage")
    a = ap.parse_args()
    lost = instance_lost(a.kills)
    o = outage(a.outage, a.rate, 200)
    print(f"\nmachine: {cpu_model() or 'CPU'}, {os.cpu_count()} cores; PostgreSQL throw-away clusters (fsync off)")
    table(f"Instance lost (kill -9 of its process group, {len(lost)} rounds): kill → the caller's BYE",
          ["p50 s", "max s", "threshold s", "p50 × threshold"],
          [[f"{statistics.median(lost):.2f}", f"{max(lost):.2f}", f"{LOST_AFTER:.0f}",
            f"{statistics.median(lost) / LOST_AFTER:.2f}"]])
    table(f"Database outage of {a.outage:.0f} s with calls going on ({a.rate:.0f} records/s)",
          ["records waited", "journal KB", "catch-up s", "records/s catching up", "records/s baseline (db up)",
           "× baseline", "calls stored / expected"],
          [[o["waiting"], f"{o['journal_kb']:.0f}", f"{o['catch_up']:.2f}", f"{o['rate']:.0f}", f"{o['base_rate']:.0f}",
            f"{o['rate'] / o['base_rate']:.2f}", f"{o['stored']}/{o['expected']}"]])
    return 0 if o["stored"] == o["expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
