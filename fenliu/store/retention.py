"""Retention: transcripts and recordings are personal data; keep them only as long as the
settings say (``store.transcript_days``, ``store.recording_days`` with ``store.recordings_dir``).
Call rows, decisions, work orders and the figures stay: they hold no speech."""

from __future__ import annotations

import time
from pathlib import Path

from fenliu.settings import Settings
from fenliu.store.record import Store

RECORDING_SUFFIXES = {".wav", ".mp3", ".ogg", ".opus", ".flac"}


def purge(store: Store, settings: Settings, *, dry_run: bool = False, now: float | None = None) -> list[str]:
    """Apply the retention settings once; returns what was (or would be) done, one line each."""
    now = time.time() if now is None else now
    s = settings.store
    out = []
    if s.transcript_days:
        before = now - s.transcript_days * 86400
        if dry_run:
            n = store.db.scalar("SELECT COUNT(*) FROM calls WHERE started_at<? AND text<>''", (before,))
            out.append(f"would blank the transcripts of {n} call(s) older than {s.transcript_days} days")
        else:
            n = store.purge_transcripts(before)
            out.append(f"blanked the transcripts of {n} call(s) older than {s.transcript_days} days")
    else:
        out.append("transcripts: kept (store.transcript_days = 0)")
    if s.recording_days and s.recordings_dir:
        before = now - s.recording_days * 86400
        old = [p for p in Path(s.recordings_dir).rglob("*")
               if p.is_file() and p.suffix.lower() in RECORDING_SUFFIXES and p.stat().st_mtime < before]
        if not dry_run:
            for p in old:
                p.unlink(missing_ok=True)
        out.append(f"{'would delete' if dry_run else 'deleted'} {len(old)} recording(s) older than "
                   f"{s.recording_days} days in {s.recordings_dir}")
    else:
        out.append("recordings: kept (store.recording_days = 0 or no store.recordings_dir)")
    return out
