"""`fenliu classify`: one text, or JSON lines in and decisions out (the evaluation contract)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from fenliu.router import Context, Router


def classify_lines(router: Router, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """One output object per non-blank input line, carrying the input's ``id``. A bad line
    yields ``{"id", "line", "error"}`` and the rest go on."""
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            yield {"id": None, "line": n, "error": f"不是有效的 JSON / invalid JSON: {e.msg} at column {e.colno}"}
            continue
        if not isinstance(obj, dict):
            yield {"id": None, "line": n, "error": "每行须是一个 JSON 对象 / each line must be a JSON object"}
            continue
        cid = obj.get("id")
        text = obj.get("text")
        if not isinstance(text, str):
            yield {"id": cid, "line": n, "error": "缺少字符串字段 text / missing string field 'text'"}
            continue
        try:
            d = router.decide(text, Context(call_id=str(cid) if cid is not None else ""))
        except Exception as e:  # one bad line must not stop a 10,000-line batch
            yield {"id": cid, "line": n, "error": f"内部错误 / internal error: {type(e).__name__}: {e}"}
            continue
        out = {"id": cid, **d.to_dict()}
        del out["call_id"]
        yield out


_worker_router: Router | None = None


def _init_worker(rules_path: str | None, model: str) -> None:
    global _worker_router
    from fenliu.service.wiring import make_router

    _worker_router = make_router(rules_path, model)


def _classify_chunk(chunk: list[tuple[int, str]]) -> list[dict[str, Any]]:
    assert _worker_router is not None
    out = []
    for n, raw in chunk:
        for obj in classify_lines(_worker_router, [raw]):
            if "line" in obj:
                obj["line"] = n
            out.append(obj)
    return out


def classify_lines_parallel(lines: Iterable[str], workers: int, rules_path: str | None, model: str = "default",
                            chunk: int = 250) -> Iterator[dict[str, Any]]:
    """``classify_lines`` over ``workers`` processes, output in input order."""
    import multiprocessing as mp
    from itertools import islice

    numbered = ((n, raw) for n, raw in enumerate(lines, start=1))

    def chunks() -> Iterator[list[tuple[int, str]]]:
        while batch := list(islice(numbered, chunk)):
            yield batch

    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(rules_path, model)) as pool:
        for result in pool.imap(_classify_chunk, chunks()):
            yield from result
