"""``fenliu report``: the figures of a date range (分流率, 派出率, 有效办结率, 满意率, 回流) and the
leads (串并分析) of the ``followup.cluster_days`` before its end, read offline from the store;
a table on the terminal, or a CSV / XLSX / JSON file; optionally the operators' final actions
as labelled JSON lines for a router retrain. Every run is written to the audit log."""

from __future__ import annotations

import getpass
import json
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fenliu.loop import stats
from fenliu.settings import Settings
from fenliu.store.record import Store

FORMATS = ("text", "csv", "xlsx", "json")


def leads_window(settings: Settings, day_to: str) -> tuple[float, float]:
    """(since, until): the ``followup.cluster_days`` ending at midnight after ``day_to``."""
    zone = ZoneInfo(settings.store.timezone)
    until = datetime.combine(date.fromisoformat(day_to) + timedelta(days=1), time(), zone).timestamp()
    return until - settings.followup.cluster_days * 86400, until


def run_report(settings: Settings, day_from: str, day_to: str, out: str = "", fmt: str = "text",
               full_numbers: bool = False, labels_out: str | None = None) -> int:
    """Compute and write the report; returns the exit status (2: bad arguments)."""
    if fmt not in FORMATS:
        print(f"格式须为 / --format must be one of {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        stats.day_range(day_from, day_to)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    urgent = {x.strip() for x in settings.transfer.urgent.split(",") if x.strip()}
    store = Store(settings.store.url, settings=settings)
    try:
        figs = stats.figures(store.db, day_from, day_to, urgent=urgent, names=settings.transfer.names)
        since, until = leads_window(settings, day_to)
        leads = stats.leads(store.db, since, settings.followup.cluster_min_numbers, until=until,
                            full_numbers=full_numbers, urgent=urgent)
        written = _write(figs, leads, fmt, out, full_numbers)
        n_labels = _write_labels(store, day_from, day_to, labels_out) if labels_out else None
        store.audit(getpass.getuser(), "report", None, "ok",
                    {"from": day_from, "to": day_to, "format": fmt, "out": written, "labels": labels_out or "",
                     "full_numbers": full_numbers})
    finally:
        store.close()
    if written not in ("", "-"):
        t = figs["totals"]
        print(f"{day_from} — {day_to}: 分流率 {_pct(t['diversion_rate'])} · 派出率 {_pct(t['dispatch_rate'])} · "
              f"有效办结率 {_pct(t['completion_rate'])} · 回流率 {_pct(t['flowback_rate'])} · "
              f"串并线索 {len(leads)} → {written}")
    if labels_out:
        print(f"{n_labels} 条标注 / labelled calls → {labels_out}", file=sys.stderr if written == "-" else sys.stdout)
    return 0


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _write(figs: dict[str, Any], leads: list[dict[str, Any]], fmt: str, out: str, full_numbers: bool) -> str:
    """Write the report; returns where it went ("" for the terminal, "-" for stdout)."""
    if fmt == "text":
        text = stats.render_text(figs, leads, full_numbers=full_numbers)
        if out and out != "-":
            Path(out).write_text(text, encoding="utf-8")
            return out
        sys.stdout.write(text)
        return ""
    out = out or f"fenliu-{figs['from']}-{figs['to']}.{fmt}"
    if fmt == "xlsx":
        if out == "-":
            raise SystemExit("xlsx 不能写到标准输出 / xlsx cannot go to stdout: give --out FILE")
        stats.to_xlsx(figs, out, leads=leads, full_numbers=full_numbers)
    elif fmt == "csv":
        stats.to_csv(figs, sys.stdout if out == "-" else out, leads=leads, full_numbers=full_numbers)
    else:
        doc = json.dumps({"figures": figs, "leads": leads}, ensure_ascii=False, indent=1)
        if out == "-":
            sys.stdout.write(doc + "\n")
        else:
            Path(out).write_text(doc + "\n", encoding="utf-8")
    return out


def _write_labels(store: Store, day_from: str, day_to: str, path: str) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in stats.labels(store.db, day_from, day_to):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
