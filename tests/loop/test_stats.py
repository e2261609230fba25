"""The figures, leads, labels and exports of fenliu.loop.stats, on SQLite and PostgreSQL.

The hand-counted fixture goes through the store's real path (calls, transcripts, router
decisions, transfers, order statuses, follow-ups); every expected number below is derived in
a comment from the list of calls in ``loop_store``."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fenliu.bus import CallEvent, WorkerFact
from fenliu.events import FinalTranscript
from fenliu.loop import stats
from fenliu.loop.report import run_report
from fenliu.settings import FollowupSettings, Settings, StoreSettings
from fenliu.sip import protocol as P
from fenliu.store.record import Store

ZONE = ZoneInfo("Asia/Shanghai")
NOISE = "邻居装修太吵"  # router: 12345, noise 噪声扰民
WAGE = "老板拖欠工资三个月不给"  # router: 12345, wage
POWER = "家里停电了"  # router: 95598, power
POLICE = "他拿刀砍人了"  # router: police
D0, D1, D2, D3 = "2024-02-29", "2024-03-01", "2024-03-02", "2024-03-03"


def at(day: str, hms: str) -> float:
    return datetime.fromisoformat(f"{day}T{hms}").replace(tzinfo=ZONE).timestamp()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return str(request.getfixturevalue("pg_store_url"))


class Calls:
    """Drives calls through ``Store.record`` the way the supervisor does."""

    def __init__(self, store: Store, router: Any) -> None:
        self.store, self.router = store, router

    def call(self, cid: str, number: str, t: float, text: str = "", divert: str = "", end: bool = True) -> None:
        s = self.store
        s.record(WorkerFact("w0", P.CallStarted(cid, 0, f"<sip:{number}@pbx>", "<sip:110@fenliu>", t=t)))
        if text:
            s.record(CallEvent(cid, "caller", "w0", FinalTranscript(cid, 1, text, 0.0, 2.0)))
            s.record(CallEvent(cid, "caller", "w0", self.router.decide(text)))
        if divert:
            uri = s.settings.transfer.targets[divert]
            s.record(WorkerFact("w0", P.TransferUpdate(cid, P.TransferStep.BRIDGED, uri, "three-way")))
        if end:
            s.record(WorkerFact("w0", P.CallEnded(cid, 0, 200, "OK", t=t + 60)))

    def order(self, cid: str, *steps: str) -> None:
        no = self.store.db.scalar("SELECT order_no FROM work_orders WHERE call_id=?", (cid,))
        for i, step in enumerate(steps):
            assert self.store.order_status(no, step, at(D3, "12:00:00") + i, "test") is not None


@pytest.fixture
def loop_store(store_url: str, router: Any) -> Any:
    """Ten calls around the range 2024-03-01 .. 2024-03-02 (Asia/Shanghai):

    c0  D0 23:59:59  …001  noise → 12345 accepted; hotline follow-up 3      (day before: out)
    c1  D1 10:00     …001  noise → 12345 accepted; dispatched, completed; follow-ups 110:1,
                           hotline:1; c9 (after the range) is its flow-back
    c2  D1 11:00     …002  noise, suggested 12345 → 12348 overrode; dispatched, returned;
                           hotline follow-up 3
    c3  D1 12:00     …003  police text → police
    c4  D1 13:00     …002  noise, suggested 12345, kept; flow-back of c2
    c5  D1 23:59:59  …005  power → 95598 accepted; dispatched
    c6  D2 00:00:00  …006  no words, no suggestion → 12345 unsuggested; order untouched;
                           110 follow-up 2
    c7  D2 09:00     …005  power, suggested 95598, kept; flow-back of c5
    c8  D2 10:00     …008  wage, suggested 12345, still live (no final action)
    c9  D3 00:00:00  …001  noise → 12345; completed; flow-back of c1; hotline follow-up 3 (out)
    """
    store = Store(store_url)
    c = Calls(store, router)
    c.call("c0", "13800000001", at(D0, "23:59:59"), NOISE, "12345")
    c.call("c1", "13800000001", at(D1, "10:00:00"), NOISE, "12345")
    c.call("c2", "13800000002", at(D1, "11:00:00"), NOISE, "12348")
    c.call("c3", "13800000003", at(D1, "12:00:00"), POLICE)
    c.call("c4", "13800000002", at(D1, "13:00:00"), NOISE)
    c.call("c5", "13800000005", at(D1, "23:59:59"), POWER, "95598")
    c.call("c6", "13800000006", at(D2, "00:00:00"), "", "12345")
    c.call("c7", "13800000005", at(D2, "09:00:00"), POWER)
    c.call("c8", "13800000008", at(D2, "10:00:00"), WAGE, end=False)
    c.call("c9", "13800000001", at(D3, "00:00:00"), NOISE, "12345")
    c.order("c1", "dispatched", "completed")
    c.order("c2", "dispatched", "returned")
    c.order("c5", "dispatched")
    c.order("c9", "completed")
    store.mark_repeat("c4", "c2", same_matter=True)
    store.mark_repeat("c7", "c5", same_matter=True)
    store.mark_repeat("c9", "c1", same_matter=True)
    for cid, side, score in (("c0", "hotline", 3), ("c1", "110", 1), ("c1", "hotline", 1), ("c2", "hotline", 3),
                             ("c6", "110", 2), ("c9", "hotline", 3)):
        store.add_followup(cid, side, score, "supervisor")
    yield store
    store.close()


def test_the_fixture_went_through_the_real_path(loop_store: Store) -> None:
    rows = {r["call_id"]: r for r in loop_store.db.rows(
        "SELECT call_id, day, suggested, suggested_category, diverted_to, final_action FROM calls")}
    assert [rows[c]["day"] for c in ("c0", "c5", "c6", "c9")] == [D0, D1, D2, D3]
    assert {c: rows[c]["final_action"] for c in rows} == {
        "c0": "accepted", "c1": "accepted", "c2": "overrode", "c3": "police", "c4": "kept", "c5": "accepted",
        "c6": "unsuggested", "c7": "kept", "c8": None, "c9": "accepted"}
    assert (rows["c3"]["suggested"], rows["c3"]["suggested_category"]) == ("police", "police")
    assert (rows["c8"]["suggested"], rows["c8"]["suggested_category"]) == ("12345", "wage")


def test_hand_counted_totals(loop_store: Store) -> None:
    f = stats.figures(loop_store.db, D1, D2)
    assert (f["from"], f["to"], f["days"]) == (D1, D2, 2)
    t = f["totals"]
    # calls: c1..c8 (c0 is the day before, c9 the day after, midnight to the second)
    assert t["calls"] == 8
    # non-police: all but c3 (police); c6 counts because it was diverted, c4/c7/c8 by suggestion
    assert t["non_police"] == 7
    # diverted: c1, c2, c5, c6 → 分流率 4/7; 日均 4 / 2 days
    assert t["diverted"] == 4 and t["diversion_rate"] == round(4 / 7, 4) and t["per_day_diverted"] == 2.0
    # orders: c1, c2, c5, c6; dispatched c1 (then completed), c2 (then returned), c5 → 3/4
    assert (t["orders"], t["dispatched"], t["dispatch_rate"]) == (4, 3, 0.75)
    # 有效办结: c1 only (c2 was returned, c9 is out of range) → 1/4; returned: c2
    assert (t["completed"], t["completion_rate"], t["returned"]) == (1, 0.25, 1)
    # 回流: c1 (c9 is its flow-back, after the range), c2 (returned and c4's flow-back: once), c5 (c7) → 3/4
    assert (t["flowback"], t["flowback_rate"]) == (3, 0.75)
    # 110 side: c1 满意, c6 基本满意 → 2/2; hotline: c1 满意, c2 不满意 → 1/2 (c0 and c9 are out)
    assert f["satisfaction"] == t["satisfaction"] == {
        "110": {"count": 2, "satisfied": 2, "rate": 1.0, "scores": {"1": 1, "2": 1, "3": 0}},
        "hotline": {"count": 2, "satisfied": 1, "rate": 0.5, "scores": {"1": 1, "2": 0, "3": 1}}}
    # accepted c1 c5; overrode c2; kept c4 c7; unsuggested c6; police c3; none: c8 still live
    assert f["actions"] == t["actions"] == {"accepted": 2, "overrode": 1, "kept": 2, "unsuggested": 1, "police": 1,
                                            "none": 1}
    assert f["overrides"] == [{"suggested": "12345", "diverted_to": "12348", "count": 1}]
    json.dumps(f)  # JSON-ready


def test_hand_counted_by_day_category_and_target(loop_store: Store) -> None:
    f = stats.figures(loop_store.db, D1, D2)
    d1, d2 = f["by_day"]
    # D1: c1..c5; non-police c1 c2 c4 c5; diverted c1 c2 c5; orders all dispatched; c1 completed;
    # flow-back c1 c2 c5
    assert d1["day"] == D1 and {k: d1[k] for k in ("calls", "non_police", "diverted", "diversion_rate",
                                                   "per_day_diverted", "orders", "dispatch_rate", "completed",
                                                   "completion_rate", "flowback_rate")} == {
        "calls": 5, "non_police": 4, "diverted": 3, "diversion_rate": 0.75, "per_day_diverted": 3.0, "orders": 3,
        "dispatch_rate": 1.0, "completed": 1, "completion_rate": round(1 / 3, 4), "flowback_rate": 1.0}
    # D2: c6 c7 c8; only c6 diverted, its order untouched; no hotline follow-up that day → rate None
    assert {k: d2[k] for k in ("calls", "non_police", "diverted", "diversion_rate", "orders", "dispatch_rate",
                               "flowback", "flowback_rate")} == {
        "calls": 3, "non_police": 3, "diverted": 1, "diversion_rate": round(1 / 3, 4), "orders": 1,
        "dispatch_rate": 0.0, "flowback": 0, "flowback_rate": 0.0}
    assert d2["satisfaction"]["hotline"]["rate"] is None and d2["satisfaction"]["110"]["rate"] == 1.0

    cats = {r["category_id"]: r for r in f["by_category"]}
    # noise: c1 c2 c4; power: c5 c7; wage: c8; police: c3; unclassified: c6 (no decision)
    assert {k: (r["category"], r["calls"], r["diverted"]) for k, r in cats.items()} == {
        "noise": ("噪声扰民", 3, 2), "power": ("停电 / 电力", 2, 1), "wage": ("劳资纠纷 / 拖欠工资", 1, 0),
        "police": ("警务警情", 1, 0), "": (stats.UNCLASSIFIED, 1, 1)}
    assert cats["noise"]["per_day_diverted"] == 1.0 and cats["wage"]["dispatch_rate"] is None

    targets = [r["target"] for r in f["by_target"]]
    # diverted-to, else suggested: 12345 = c1 c4 c6 c8, 95598 = c5 c7, 12348 = c2, police = c3 (last)
    assert targets == ["12345", "95598", "12348", "police"]
    tg = {r["target"]: r for r in f["by_target"]}
    assert (tg["12345"]["calls"], tg["12345"]["diverted"], tg["12345"]["orders"], tg["12345"]["flowback"]) == (4, 2, 2, 1)
    assert (tg["12348"]["returned"], tg["12348"]["flowback_rate"]) == (1, 1.0)
    assert tg["95598"]["target_name"] == "95598供电服务热线"
    # police: nothing to divert, no orders → every rate None
    p = tg["police"]
    assert (p["non_police"], p["diversion_rate"], p["dispatch_rate"], p["completion_rate"], p["flowback_rate"]) == (
        0, None, None, None, None)


def test_range_boundaries_and_empty_range(loop_store: Store) -> None:
    one = stats.figures(loop_store.db, D2, D2)["totals"]
    assert (one["calls"], one["diverted"], one["per_day_diverted"]) == (3, 1, 1.0)  # c6 c7 c8
    assert stats.figures(loop_store.db, D3, D3)["totals"]["calls"] == 1  # c9 at 00:00:00
    empty = stats.figures(loop_store.db, "2024-04-01", "2024-04-03")
    t = empty["totals"]
    assert t["calls"] == 0 and t["per_day_diverted"] == 0.0
    assert [t[k] for k in stats.RATES] == [None] * 4
    assert t["satisfaction"]["110"]["rate"] is None
    assert [d["day"] for d in empty["by_day"]] == ["2024-04-01", "2024-04-02", "2024-04-03"]  # calendar days
    assert empty["by_category"] == empty["by_target"] == empty["overrides"] == []
    with pytest.raises(ValueError):
        stats.figures(loop_store.db, D2, D1)


def test_labels_for_a_retrain(loop_store: Store) -> None:
    got = [(r["call_id"], r["label"], r["final_action"]) for r in stats.labels(loop_store.db, D1, D2)]
    # ended calls with caller words only: c6 said nothing, c8 is live
    assert got == [("c1", "12345", "accepted"), ("c2", "12348", "overrode"), ("c3", "police", "police"),
                   ("c4", "police", "kept"), ("c5", "95598", "accepted"), ("c7", "police", "kept")]
    first = next(stats.labels(loop_store.db, D1, D1))
    assert first["text"] == NOISE and first["suggested"] == "12345" and first["suggested_category"] == "noise"
    assert "number" not in first


def test_csv_has_a_bom_and_reads_back(loop_store: Store, tmp_path: Path) -> None:
    f = stats.figures(loop_store.db, D1, D2)
    path = tmp_path / "r.csv"
    stats.to_csv(f, path)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(path.open(encoding="utf-8-sig", newline="")))
    assert rows[0] == ["# 总览"]
    overview = {r[0]: r[1] for r in rows[2:30] if len(r) == 2}
    assert overview["分流率 diversion rate"] == "57.1%" and overview["接警总量 calls"] == "8"
    titles = [r[0] for r in rows if r and r[0].startswith("# ")]
    assert titles == ["# 总览", "# 按日", "# 按类别", "# 按热线", "# 处置动作"]
    police = next(r for r in rows if r[:1] == ["police"])
    assert "—" in police  # a rate without a denominator
    buf = io.StringIO()
    stats.to_csv(f, buf)
    assert buf.getvalue().startswith("\ufeff# 总览")


def test_xlsx_sheets_rates_and_masked_numbers(loop_store: Store, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    f = stats.figures(loop_store.db, D1, D2)
    lead = {"key": "星光医美", "reason": "entity", "reason_label": "同一商户/地点", "count": 1, "distinct_numbers": 1,
            "numbers": ["13800000001"], "first_day": D1, "last_day": D1,
            "calls": [{"call_id": "c1", "day": D1}]}
    path = tmp_path / "r.xlsx"
    stats.to_xlsx(f, path, leads=[lead])
    wb = load_workbook(path)
    assert wb.sheetnames == ["总览", "按日", "按类别", "按热线", "处置动作", "串并线索"]
    overview = {r[0].value: r[1] for r in wb["总览"].iter_rows(min_row=2)}
    cell = overview["分流率 diversion rate"]
    assert cell.value == pytest.approx(4 / 7, abs=1e-4) and cell.number_format == "0.0%"
    assert wb["串并线索"]["E2"].value == "138****0001"
    police = next(r for r in wb["按热线"].iter_rows(min_row=2, values_only=True) if r[0] == "police")
    assert "—" in police
    stats.to_xlsx(f, path, leads=[lead], full_numbers=True)
    assert load_workbook(path)["串并线索"]["E2"].value == "13800000001"
    stats.to_xlsx(f, path)
    assert load_workbook(path).sheetnames == ["总览", "按日", "按类别", "按热线", "处置动作"]


def test_report_command(loop_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(store=StoreSettings(url=loop_store.url), followup=FollowupSettings(cluster_min_numbers=2))
    assert run_report(settings, D1, D2, "", "text") == 0
    out = capsys.readouterr().out
    assert "== 总览 ==" in out and "57.1%" in out and "噪声扰民" in out
    assert run_report(settings, D1, D2, str(tmp_path / "r.json"), "json", labels_out=str(tmp_path / "l.jsonl")) == 0
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert doc["figures"]["totals"]["calls"] == 8 and isinstance(doc["leads"], list)
    assert len((tmp_path / "l.jsonl").read_text(encoding="utf-8").splitlines()) == 6
    assert run_report(settings, D1, D2, str(tmp_path / "r.xlsx"), "xlsx") == 0
    assert (tmp_path / "r.xlsx").stat().st_size > 0
    assert run_report(settings, D2, D1, "", "text") == 2
    assert loop_store.audit_log(action="report")[0]["detail"]["format"] == "xlsx"


# -- leads -------------------------------------------------------------------------------------
def insert(db: Any, cid: str, number: str, t: float, text: str, suggested: str = "12345", category: str = "消费纠纷",
           diverted: str | None = None) -> None:
    db.execute("INSERT INTO calls(call_id, worker, started_at, ended_at, number, day, suggested, suggested_category, "
               "category, diverted_to, text) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
               (cid, "w0", t, t + 60, number, D1, suggested, "consumer", category, diverted,
                f"caller: {text}\noperator: 好的，您说\n"))


T = at(D1, "09:00:00")
CLINIC = ["我在星光医美做了双眼皮，现在眼睛肿了他们不给退钱", "星光医美诊所收了我两万块钱，手术做坏了不认账",
          "去年在星光医美打了玻尿酸，要求赔偿他们不理"]


def test_three_numbers_about_one_clinic_make_one_lead(store_url: str) -> None:
    store = Store(store_url)
    for i, text in enumerate(CLINIC):
        insert(store.db, f"m{i}", f"1390000000{i}", T + i * 3600, text, diverted="12345" if i else None)
    insert(store.db, "m3", "13900000000", T + 4 * 3600, "星光医美又打电话来威胁我")  # the same number again
    insert(store.db, "p0", "13900000009", T, "星光医美门口有人打架", suggested="police")  # police: not a lead
    got = stats.leads(store.db, T - 1, 3)
    assert len(got) == 1
    lead = got[0]
    assert (lead["key"], lead["reason"], lead["count"], lead["distinct_numbers"]) == ("星光医美", "entity", 4, 3)
    assert lead["numbers"] == ["139****0000", "139****0001", "139****0002"]
    assert [c["call_id"] for c in lead["calls"]] == ["m3", "m2", "m1", "m0"]  # newest first
    assert lead["first_at"] == T and lead["last_at"] == T + 4 * 3600 and lead["first_day"] == D1
    assert lead["calls"][0]["number"] == "139****0000" and "星光医美" in lead["calls"][0]["excerpt"]
    assert stats.leads(store.db, T - 1, 3, full_numbers=True)[0]["numbers"][0] == "13900000000"
    assert len(stats.leads(store.db, T + 1, 3)) == 1  # without m0: m3 has the same number
    assert stats.leads(store.db, T + 3601, 3) == []  # m2 and m3 only: two numbers
    assert stats.leads(store.db, T - 1, 3, until=T + 2 * 3600) == []
    json.dumps(got)
    store.close()


def test_two_numbers_are_not_enough_and_merchants_stay_apart(store_url: str) -> None:
    store = Store(store_url)
    for i, text in enumerate(CLINIC[:2]):
        insert(store.db, f"m{i}", f"1390000000{i}", T + i, text)
    assert stats.leads(store.db, T - 1, 3) == []
    assert len(stats.leads(store.db, T - 1, 2)) == 1
    moon = ["月亮美容院给我打针打出问题了", "我在月亮美容院办的卡不给退", "月亮美容院乱收费，还骂人"]
    for i, text in enumerate(moon):
        insert(store.db, f"n{i}", f"1370000000{i}", T + i, text)
    insert(store.db, "m2", "13900000002", T + 9, CLINIC[2])
    got = stats.leads(store.db, T - 1, 3)
    assert sorted(g["key"] for g in got) == ["星光医美", "月亮美容院"]
    assert all(g["reason"] == "entity" and g["distinct_numbers"] == 3 for g in got)
    store.close()


def test_near_identical_scripts_from_different_numbers(store_url: str) -> None:
    store = Store(store_url)
    script = "你好我要投诉他们给我做的项目出了问题必须赔偿五万元不然我就去网上曝光"
    variants = [script, "喂你好我要投诉他们给我做的项目出了问题必须赔偿五万元不然就去网上曝光",
                "你好我要投诉，他们给我做的项目出了问题，必须赔偿五万元，不然我就去网上曝光的"]
    for i, text in enumerate(variants):
        insert(store.db, f"s{i}", f"1360000000{i}", T + i, text)
    insert(store.db, "x", "13600000009", T + 5, "楼上邻居每天晚上跳广场舞，声音特别大，影响休息")
    got = stats.leads(store.db, T - 1, 3)
    assert len(got) == 1 and got[0]["reason"] == "similar_text" and got[0]["distinct_numbers"] == 3
    assert {c["call_id"] for c in got[0]["calls"]} == {"s0", "s1", "s2"}
    # the clinic calls are alike too, but the merchant lead already holds them: no second lead
    for i, text in enumerate(CLINIC):
        insert(store.db, f"m{i}", f"1390000000{i}", T + i, text + "，我要求赔偿五万元")
    assert sorted(g["reason"] for g in stats.leads(store.db, T - 1, 3)) == ["entity", "similar_text"]
    store.close()


@pytest.mark.parametrize("text, expected", [
    ("我在星光医美做了双眼皮", {"星光|beauty": "星光医美"}),
    ("星光医美诊所收了我钱", {"星光|beauty": "星光医美诊所"}),
    ("楼下的蓝调酒吧太吵了", {"蓝调|venue": "蓝调酒吧"}),
    ("我们小区停水了", {}),
    ("这家店不退钱", {}),
    ("阳光花园小区门口摆摊", {"阳光花园|place": "阳光花园", "阳光花园小区|place": "阳光花园小区"}),
    ("我在解放路十二号的那家店买的", {"解放路12号|address": "解放路12号"}),
    ("ＡＢＣ公司拖欠工资", {"abc|company": "ABC公司"}),
])
def test_entities(text: str, expected: dict[str, str]) -> None:
    assert stats.entities(text) == expected


def test_masking_and_caller_text() -> None:
    assert stats.caller_text("caller: 你好\noperator: 请讲\ncaller: 楼下太吵\n") == "你好楼下太吵"
    assert stats.caller_text("没有分行的文字") == "没有分行的文字"
    lead = {"key": "k", "reason": "entity", "reason_label": "x", "count": 1, "distinct_numbers": 1,
            "numbers": ["13812345678"], "first_day": D1, "last_day": D1, "calls": []}
    text = stats.render_text(_empty_figures(), [lead])
    assert "138****5678" in text and "13812345678" not in text
    assert "13812345678" in stats.render_text(_empty_figures(), [lead], full_numbers=True)


def _empty_figures() -> dict[str, Any]:
    class NoRows:
        def rows(self, *_: Any) -> list[dict[str, Any]]:
            return []

    return stats.figures(NoRows(), D1, D1)  # type: ignore[arg-type]


def test_a_long_range_counts_flowbacks_the_same_way(loop_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    short = stats.figures(loop_store.db, D1, D2)
    monkeypatch.setattr(stats, "LONG_RANGE_DAYS", 1)  # D1..D2 now takes the long-range query
    assert stats.figures(loop_store.db, D1, D2) == short


def test_scripted_calls_rank_first(store_url: str) -> None:
    store = Store(store_url)
    # a big estate: four numbers, four different complaints
    for i, text in enumerate(["阳光花园小区门口的垃圾好几天没人收了", "阳光花园小区晚上广场舞声音太大影响休息",
                              "阳光花园小区停水两天了也没有通知", "阳光花园小区的路灯坏了一个月没人修"]):
        insert(store.db, f"e{i}", f"1350000000{i}", T + i, text)
    # a clinic: three numbers reading one script, and one of them calling twice with it
    for i, number in enumerate(["13900000000", "13900000001", "13900000002", "13900000000"]):
        insert(store.db, f"m{i}", number, T + 10 + i, "我在星光医美做了双眼皮现在眼睛肿了他们不给退钱还骂人")
    got = stats.leads(store.db, T - 1, 3)
    # 阳光花园 holds the same calls as 阳光花园小区: one lead, by its longer name
    assert [(g["key"], g["scripted"], g["distinct_numbers"]) for g in got] == [("星光医美", 4, 3),
                                                                              ("阳光花园小区", 0, 4)]
    store.close()
