"""The records that wait for the database, on disk too.

While the store cannot be written (PostgreSQL restarting, an SQLite file locked by another tool)
the call records wait in memory, in order (``Store.record``). If fenliu itself crashed then, they
would be lost; so each waiting record is also appended to this journal (a private file beside the
store, or under ``var/`` for PostgreSQL), and the journal is emptied once the store has taken them
all. A store opened with a non-empty journal takes the journal's records first, in order.

One record per line: base64 of its pickle. The file is this service's own, written and read by
the same fenliu (mode 0600); it holds typed bus items (dataclasses), not input from outside.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self.count = 0

    def append(self, item: Any) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "a", encoding="ascii")
        self._file.write(base64.b64encode(pickle.dumps(item)).decode("ascii") + "\n")
        self._file.flush()  # in the kernel: a crash of this process loses nothing written
        self.count += 1

    def load(self) -> list[Any]:
        """The records a previous run left (a line cut by a crash mid-write is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(encoding="ascii", errors="replace").splitlines(), 1):
            try:
                out.append(pickle.loads(base64.b64decode(line)))  # noqa: S301 - our own private file
            except Exception:  # noqa: BLE001 - a torn last line
                log.warning("%s:%d: unreadable journal line skipped", self.path, n)
        return out

    def clear(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path.exists():
            self.path.unlink()
        self.count = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
