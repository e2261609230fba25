#!/usr/bin/env python3
"""Benchmark of the figures and leads (fenliu.loop.stats) on a year of synthetic calls.
One command, tables on stdout, ratios against baselines measured in the same run.

    python scripts/bench_stats.py                        # 1,000,000 calls into SQLite
    python scripts/bench_stats.py --calls 200000 --pg postgresql://postgres@127.0.0.1:5432/bench

The mix: ~60 % police; the rest diverted (~93 %) with work orders (completed, dispatched,
returned …), follow-ups on both sides, repeat callers and flow-backs, and a few "rings" of
numbers complaining about the same clinic (what the leads should find); callers' words with a
few characters misheard. Baselines: the same ``figures()`` on a copy of the store without the
``day`` indexes, and the same figures computed the naive way (every call into Python, folded
row by row) on a 100k-call slice, scaled to the year.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fenliu.loop import stats  # noqa: E402
from fenliu.store.db import Database  # noqa: E402
from fenliu.store.schema import MIGRATIONS  # noqa: E402

ZONE = ZoneInfo("Asia/Shanghai")
LAST_DAY = date(2024, 12, 31)
CALL_COLS = ("call_id", "worker", "remote", "started_at", "ended_at", "status", "reason", "target", "category",
             "transfer", "text", "number", "called", "day", "suggested", "suggested_category", "diverted_to",
             "final_action", "repeat_of", "flowback_of")
ORDER_COLS = ("order_no", "call_id", "target", "category", "category_id", "number", "status", "created_at",
              "updated_at", "deadline", "accepted_at", "dispatched_at", "completed_at", "returned_at", "day")
FOLLOWUP_COLS = ("call_id", "side", "score", "source", "at")

SYLLABLES = "星光月亮阳明华新东方金银龙凤海天山水春秋和平安康乐福泰盛兴旺美丽佳锦绣宏达恒通广利鑫源嘉禾"
# category id, label, target, weight among non-police calls, caller templates
CATEGORIES: list[tuple[str, str, str, float, list[str]]] = [
    ("noise", "噪声扰民", "12345", 0.22, ["{venue}每天晚上放音乐到{hour}点，{fill}", "楼上邻居装修太吵了，{hour}点还在用电钻，{fill}",
                                       "{place}旁边的工地夜里施工，噪音特别大，{fill}"]),
    ("wage", "劳资纠纷 / 拖欠工资", "12345", 0.12, ["{company}拖欠我们{n}个人的工资{m}个月了，{fill}",
                                              "我在{company}干了{m}个月，老板欠我{money}块钱不给，{fill}"]),
    ("consumer", "消费纠纷", "12345", 0.16, ["我在{shop}买的东西有质量问题，{shop}不给退，{fill}",
                                          "{beauty}给我做的项目出了问题，花了{money}块，要求退钱他们不理，{fill}",
                                          "在{shop}充了{money}块的卡，现在店关门了，{fill}"]),
    ("pricing", "物价", "12345", 0.05, ["{shop}一份菜卖{money}块，太离谱了，{fill}"]),
    ("water", "供水 / 漏水", "12345", 0.08, ["{place}停水{m}天了，{fill}", "楼上漏水到我家了，{company}不管，{fill}"]),
    ("power", "停电 / 电力", "95598", 0.09, ["{place}停电了，{hour}点到现在还没来电，{fill}", "家里突然停电，整栋楼都没电，{fill}"]),
    ("legal", "法律咨询", "12348", 0.08, ["我想咨询一下离婚以后房子怎么分，{fill}", "{company}不跟我签劳动合同，法律上怎么办，{fill}"]),
    ("traffic", "交通运输", "12328", 0.07, ["出租车司机绕路多收了我{money}块钱，{fill}", "{road}的公交车一个小时都不来，{fill}"]),
    ("women", "妇女维权", "12338", 0.04, ["单位因为我怀孕要辞退我，{fill}", "我老公经常骂我，我想找妇联帮忙，{fill}"]),
    ("social", "社会求助", "social", 0.09, ["家里门锁坏了进不去，想找开锁的，{fill}", "{place}里有只流浪狗咬人，{fill}"]),
]
CATEGORY = {c[0]: c for c in CATEGORIES}
# ~90,000 merchants and places named at random, plus 40 big ones (malls, estates) named often
NAMES = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES]
POPULAR = [a + b for a in SYLLABLES[:8] for b in SYLLABLES[8:13]]
RINGS = 3
RING_CALLS = sum(4 + k for k in range(RINGS))
POLICE = ["有人在{place}门口打架，{fill}", "我的电动车在{place}被偷了，{fill}", "有人拿刀威胁我，{fill}",
          "{road}发生车祸有人受伤了，{fill}", "我被人骗了{money}块钱，{fill}", "{venue}里有人吸毒，{fill}"]
FILLERS = ["麻烦你们快点处理", "我已经说过好几次了", "家里有老人孩子", "实在没办法才打电话", "你们管不管",
           "我现在就在现场", "昨天就开始了", "邻居们都有意见", "希望尽快给个答复", "我电话一直开着", "请派人来看看",
           "已经影响正常生活了", "我要投诉", "不知道该找谁", ""]
GREETINGS = ["", "", "喂，", "你好，", "喂你好，", "警察同志，", "那个，", "我跟你说，"]
HOTLINE_SCORES = (1, 1, 1, 1, 1, 1, 1, 2, 2, 3)
POLICE_SCORES = (1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3)


class Gen:
    """Synthetic calls, orders and follow-ups, day by day, in time order."""

    def __init__(self, calls: int, days: int, seed: int = 7) -> None:
        self.r = random.Random(seed)
        self.total, self.days = calls, days
        self.cat_weights = list(_cumulative([c[3] for c in CATEGORIES]))
        self.recent: list[tuple[str, str, str, float]] = []  # diverted (call_id, number, category, t)
        self.seq = 0
        # calls per day: growing over the year (as the seed's 9.8 → 21.4 a day), ±10 % noise,
        # exactly `calls` in all with the rings' calls
        weights = [(0.7 + 0.6 * i / max(1, days - 1)) * self.r.uniform(0.9, 1.1) for i in range(days)]
        budget = calls - RING_CALLS
        self.per_day = [int(budget * w / sum(weights)) for w in weights]
        for j in range(budget - sum(self.per_day)):
            self.per_day[-1 - j] += 1

    def name(self) -> str:
        return self.r.choice(POPULAR if self.r.random() < 0.1 else NAMES)

    def text(self, template: str) -> str:
        r = self.r
        return template.format(
            place=self.name() + r.choice(("小区", "花园", "广场", "大厦")), venue=self.name() + r.choice(("酒吧", "KTV", "会所")),
            company=self.name() + r.choice(("公司", "物业", "工作室")), shop=self.name() + r.choice(("超市", "饭店", "店")),
            beauty=self.name() + r.choice(("医美", "美容院", "诊所")), road=f"{self.name()}路{r.randint(1, 300)}号",
            hour=r.randint(1, 12), n=r.randint(2, 40), m=r.randint(1, 12), money=r.randint(2, 900) * 100,
            fill=r.choice(FILLERS))

    def heard(self, words: str) -> str:
        """What the recogniser made of it: a few characters misheard (~4 %), a greeting or not."""
        r = self.r
        chars = [c if r.random() > 0.04 else r.choice(SYLLABLES) for c in words]
        return r.choice(GREETINGS) + "".join(chars)

    def number(self) -> str:
        return f"1{self.r.choice('3456789')}{self.r.randrange(10 ** 9):09d}"

    def day_rows(self, i: int, day: date) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        r = self.r
        n = self.per_day[i]
        midnight = datetime(day.year, day.month, day.day, tzinfo=ZONE).timestamp()
        times = sorted(midnight + r.random() * 86400 for _ in range(n))
        calls, orders, follow = [], [], []
        self.recent = [x for x in self.recent if x[3] > midnight - 7 * 86400]
        for t in times:
            self.seq += 1
            cid = f"b{self.seq:08d}"
            number, repeat_of, flowback_of = self.number(), None, None
            cat: tuple[str, str, str, float, list[str]] | None = None
            if self.recent and r.random() < 0.06:  # the same caller again within the week
                prior = r.choice(self.recent)
                number = prior[1]
                if r.random() < 0.5 and prior[2] in CATEGORY:
                    flowback_of = prior[0]
                    cat = CATEGORY[prior[2]]
                else:
                    repeat_of = prior[0]
            police = cat is None and r.random() < 0.6
            if police:
                words, suggested, cat_id, label = self.text(r.choice(POLICE)), "police", "police", "police"
                diverted = "12345" if r.random() < 0.01 else None  # the operator diverted anyway
            else:
                cat = cat or r.choices(CATEGORIES, cum_weights=self.cat_weights)[0]
                cat_id, label, suggested = cat[0], cat[1], cat[2]
                words = self.text(r.choice(cat[4]))
                roll = r.random()
                diverted = None if roll < 0.07 else ("12348" if roll < 0.10 and suggested != "12348" else suggested)
            action = ("police" if not diverted else "unsuggested") if suggested == "police" else (
                "kept" if not diverted else ("accepted" if diverted == suggested else "overrode"))
            text = f"caller: {self.heard(words)}\noperator: 好的，您说的情况我们记下了\n"
            calls.append((cid, "w0", f"<sip:{number}@pbx>", t, t + r.uniform(40, 300), 200, "OK", diverted or suggested,
                          label, "bridged" if diverted else None, text, number, "110", day.isoformat(), suggested,
                          cat_id, diverted, action, repeat_of, flowback_of))
            if diverted:
                self.recent.append((cid, number, cat_id, t))
                orders.append(self.order(cid, number, diverted, label, cat_id, t, day))
                follow += self.followups(cid, t)
            elif r.random() < 0.1:
                follow.append((cid, "110", r.choice(POLICE_SCORES), "sms", t + 3600))
        return calls, orders, follow

    def order(self, cid: str, number: str, target: str, label: str, cat_id: str, t: float,
              day: date) -> tuple[Any, ...]:
        r = self.r
        roll = r.random()
        accepted = t + r.uniform(30, 600)
        dispatched = accepted + r.uniform(600, 7200) if roll < 0.95 else None
        completed = dispatched + r.uniform(3600, 200000) if dispatched and roll < 0.85 else None
        returned = dispatched + r.uniform(3600, 86400) if dispatched and 0.85 <= roll < 0.89 else None
        status = ("completed" if completed else "returned" if returned else "dispatched" if dispatched else
                  "accepted" if roll < 0.98 else "failed")
        last = completed or returned or dispatched or accepted
        return (f"FL{day:%Y%m%d}-{cid}", cid, target, label, cat_id, number, status, t, last, t + 72 * 3600,
                accepted, dispatched, completed, returned, day.isoformat())

    def followups(self, cid: str, t: float) -> list[tuple[Any, ...]]:
        r = self.r
        out = []
        if r.random() < 0.35:
            out.append((cid, "110", r.choice(POLICE_SCORES), "sms", t + 3600))
        if r.random() < 0.25:
            out.append((cid, "hotline", r.choice(HOTLINE_SCORES), "sms", t + 4 * 86400))
        return out

    def rings(self, day: date) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Three groups of numbers disputing with one clinic each, in the 25 days before ``day``
        (the seed's extortion ring): 4, 5 and 6 numbers."""
        calls, orders = [], []
        midnight = datetime(day.year, day.month, day.day, tzinfo=ZONE).timestamp()
        for k in range(RINGS):
            clinic = ring_clinic(k)
            for _ in range(4 + k):
                self.seq += 1
                cid, number = f"b{self.seq:08d}", self.number()
                t = midnight - self.r.uniform(0, 25) * 86400
                words = self.r.choice([f"我在{clinic}做了双眼皮，现在眼睛肿了，他们不给退钱",
                                       f"{clinic}诊所收了我两万块钱，手术做坏了不认账",
                                       f"去年在{clinic}打了玻尿酸，要求赔偿他们不理"])
                d = datetime.fromtimestamp(t, ZONE).date()
                calls.append((cid, "w0", f"<sip:{number}@pbx>", t, t + 120, 200, "OK", "12345", "消费纠纷", "bridged",
                              f"caller: {self.heard(words)}\n", number, "110", d.isoformat(), "12345", "consumer", "12345",
                              "accepted", None, None))
                orders.append(self.order(cid, number, "12345", "消费纠纷", "consumer", t, d))
        return calls, orders


def ring_clinic(k: int) -> str:
    return f"{NAMES[7 * k + 5]}医美"


def _cumulative(weights: list[float]) -> Iterator[float]:
    acc = 0.0
    for w in weights:
        acc += w
        yield acc


# -- loading ---------------------------------------------------------------------------------------
def load(db: Database, gen: Gen, days: int) -> dict[str, int]:
    """Write the generated rows with big executemany transactions (SQLite) or COPY (PostgreSQL)."""
    counts = {"calls": 0, "work_orders": 0, "followups": 0}
    first = LAST_DAY - timedelta(days=days - 1)
    batch: dict[str, list[tuple[Any, ...]]] = {k: [] for k in counts}

    def flush() -> None:
        for table, rows in batch.items():
            if rows:
                write(db, table, rows)
                counts[table] += len(rows)
                rows.clear()

    for i in range(days):
        calls, orders, follow = gen.day_rows(i, first + timedelta(days=i))
        batch["calls"] += calls
        batch["work_orders"] += orders
        batch["followups"] += follow
        if len(batch["calls"]) >= 100_000:
            flush()
    calls, orders = gen.rings(LAST_DAY)
    batch["calls"] += calls
    batch["work_orders"] += orders
    flush()
    return counts


COLUMNS = {"calls": CALL_COLS, "work_orders": ORDER_COLS, "followups": FOLLOWUP_COLS}


def write(db: Database, table: str, rows: list[tuple[Any, ...]]) -> None:
    cols = COLUMNS[table]
    con = db._con  # the bench loads through the raw connection, for speed
    if db.dialect == "sqlite":
        con.execute("BEGIN")
        con.executemany(f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
        con.execute("COMMIT")
    else:
        with con.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)


# -- timing ----------------------------------------------------------------------------------------
def median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def naive_figures(db: Database, limit: int) -> int:
    """The per-row way, for comparison: every call of a slice (with its order and follow-ups)
    into Python, folded one by one into the same totals / day / category / hotline rows."""
    rows = db.rows("SELECT c.call_id, c.day, c.suggested, c.suggested_category, c.category, c.diverted_to, "
                   "c.final_action, w.id AS wid, w.dispatched_at, w.completed_at, w.returned_at FROM calls c "
                   "LEFT JOIN work_orders w ON w.call_id = c.call_id ORDER BY c.started_at LIMIT ?", (limit,))
    back = {r["flowback_of"] for r in db.rows("SELECT flowback_of FROM calls WHERE flowback_of IS NOT NULL")}
    scores: dict[str, list[tuple[str, int]]] = {}
    for f in db.rows("SELECT call_id, side, score FROM followups"):
        scores.setdefault(f["call_id"], []).append((f["side"], f["score"]))
    accs: dict[tuple[str, str], Any] = {}
    for r in rows:
        keys = (("total", ""), ("day", r["day"]), ("category", r["suggested_category"] or ""),
                ("target", r["diverted_to"] or r["suggested"] or "police"))
        diverted = bool(r["diverted_to"])
        counts = {"calls": 1, "non_police": int(diverted or r["suggested"] not in (None, "police")),
                  "diverted": int(diverted), "orders": int(r["wid"] is not None),
                  "dispatched": int(bool(r["dispatched_at"] or r["completed_at"])),
                  "completed": int(bool(r["completed_at"] and not r["returned_at"])),
                  "returned": int(bool(r["returned_at"])),
                  "flowback": int(diverted and bool(r["returned_at"] or r["call_id"] in back))}
        for k in keys:
            acc = accs.setdefault(k, stats._Acc())
            acc.n.update(counts)
            acc.actions[r["final_action"] or "none"] += 1
            for side, score in scores.get(r["call_id"], ()):
                acc.scores[side][score] += 1
    return len(accs)


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  " + " | ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))))
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths))


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6


def bench(db: Database, label: str, runs: int, baseline: Database | None, calls: int) -> list[list[Any]]:
    """Time figures() for a day, a month and a year, and leads() over 30 days."""
    last = LAST_DAY.isoformat()
    ranges = [("1 day", last, last), ("30 days", (LAST_DAY - timedelta(days=29)).isoformat(), last),
              ("365 days", (LAST_DAY - timedelta(days=364)).isoformat(), last)]
    out: list[list[Any]] = []
    for name, d_from, d_to in ranges:
        ms, figs = median_ms(partial(stats.figures, db, d_from, d_to), runs)
        t = figs["totals"]
        note = f"{t['calls']:,} calls, 分流率 {t['diversion_rate']:.1%}, 派出率 {t['dispatch_rate']:.1%}"
        base, ratio = "", ""
        if baseline is not None:
            bms, _ = median_ms(partial(stats.figures, baseline, d_from, d_to), runs)
            base, ratio = f"{bms:,.0f}", f"{bms / ms:.1f}x"
        out.append([f"{label} figures {name}", f"{ms:,.0f}", base, ratio, note])
    slice_n = min(100_000, calls)
    nms, _ = median_ms(lambda: naive_figures(db, slice_n), 1)
    scaled = nms * calls / slice_n
    year_ms = float(out[-1][1].replace(",", ""))
    out.append([f"{label} per-row Python figures 365 days", f"{scaled:,.0f}", "", f"{scaled / year_ms:.1f}x",
                f"baseline: {slice_n:,}-call slice × {calls / slice_n:.0f}, against figures 365 days"])
    until = datetime(LAST_DAY.year, LAST_DAY.month, LAST_DAY.day, tzinfo=ZONE).timestamp() + 86400
    ms, found = median_ms(lambda: stats.leads(db, until - 30 * 86400, 3, until=until), runs)
    kinds = {k: sum(1 for f in found if f["reason"] == k) for k in ("entity", "similar_text")}
    planted = [ring_clinic(k)[:3] for k in range(RINGS)]
    rings = sum(1 for name in planted if any(c["excerpt"].find(name) >= 0 for f in found for c in f["calls"]))
    out.append([f"{label} leads 30 days", f"{ms:,.0f}", "", "",
                f"{len(found)} leads ({kinds['entity']} merchant/place, {kinds['similar_text']} similar text), "
                f"{rings}/{RINGS} planted clinic rings among them"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pg", default="", help="also load and time an EMPTY PostgreSQL database at this URL")
    ap.add_argument("--keep", default="", help="keep the SQLite store in this folder")
    args = ap.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="fenliu-bench-stats-"))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "stats.db"
    for p in tmp.glob("stats.db*"):
        p.unlink()
    print(f"{args.calls:,} calls over {args.days} days ending {LAST_DAY} → {path}")
    rows: list[list[Any]] = []
    load_rows: list[list[Any]] = []
    try:
        db = Database(f"sqlite:///{path}")
        db.migrate(MIGRATIONS)
        t0 = time.perf_counter()
        counts = load(db, Gen(args.calls, args.days), args.days)
        load_s = time.perf_counter() - t0
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        load_rows.append(["SQLite", f"{counts['calls']:,}", f"{counts['work_orders']:,}", f"{counts['followups']:,}",
                          f"{load_s:.0f}", f"{size_mb(path):,.0f}"])
        copy = tmp / "noindex.db"
        shutil.copyfile(path, copy)
        base = Database(f"sqlite:///{copy}")
        base.execute("DROP INDEX calls_day")
        base.execute("DROP INDEX work_orders_day")
        rows += bench(db, "SQLite", args.runs, base, counts["calls"])
        base.close()
        db.close()
        if args.pg:
            pg = Database(args.pg)
            pg.migrate(MIGRATIONS)
            if pg.scalar("SELECT COUNT(*) FROM calls"):
                raise SystemExit(f"{args.pg}: the calls table is not empty; give an empty database")
            t0 = time.perf_counter()
            counts = load(pg, Gen(args.calls, args.days), args.days)
            pg.execute("ANALYZE")
            load_s = time.perf_counter() - t0
            mb = int(pg.scalar("SELECT pg_database_size(current_database())")) / 1e6
            load_rows.append(["PostgreSQL", f"{counts['calls']:,}", f"{counts['work_orders']:,}",
                              f"{counts['followups']:,}", f"{load_s:.0f}", f"{mb:,.0f}"])
            indexed = bench(pg, "PostgreSQL", args.runs, None, counts["calls"])
            pg.execute("DROP INDEX calls_day")
            pg.execute("DROP INDEX work_orders_day")
            for r in indexed[:3]:
                d_from, d_to = _range_of(r[0])
                bms, _ = median_ms(partial(stats.figures, pg, d_from, d_to), args.runs)
                r[2], r[3] = f"{bms:,.0f}", f"{bms / float(r[1].replace(',', '')):.1f}x"
            pg.execute("CREATE INDEX calls_day ON calls(day)")
            pg.execute("CREATE INDEX work_orders_day ON work_orders(day)")
            rows += indexed
            pg.close()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    table("load (bulk inserts)", ["store", "calls", "orders", "follow-ups", "seconds", "store MB"], load_rows)
    table(f"median of {args.runs} runs, ms (baseline: the same query without the day indexes)",
          ["what", "ms", "baseline ms", "ratio", "result"], rows)
    print(f"\ncpu: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    return 0


def _range_of(what: str) -> tuple[str, str]:
    days = int(what.split("figures ")[1].split()[0])
    return (LAST_DAY - timedelta(days=days - 1)).isoformat(), LAST_DAY.isoformat()


if __name__ == "__main__":
    sys.exit(main())
