"""The supervisor's local HTTP API (the console builds its UI on it; the CLI uses it).

    GET  /api/calls                              live calls
    POST /api/calls/{call_id}/transfer           {"target": "12345", "mode": "three-way"|"refer"|"attended",
                                                  "wait": 25}  (wait: seconds to wait for the outcome)
    POST /api/calls/{call_id}/release-operator   {"wait": 10}  the operator leaves the three-way call
    POST /api/calls/{call_id}/hangup
    GET  /api/health                             every worker and ASR process as it really is
    GET  /metrics                                Prometheus

With ``wait``, the answer is the outcome, not the request: 200 when the transfer is bridged /
completed, 502 with the reason when it failed (the caller stays with the operator), 504 when
nothing was heard in time. Domain errors map to 404 (no such call) and 400 (bad target or mode).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from fenliu.service.bus import EventBus, Item, WorkerFact
from fenliu.service.metrics import CONTENT_TYPE_LATEST, Metrics
from fenliu.service.supervisor import Supervisor
from fenliu.sip import protocol as P

SUPERVISOR = web.AppKey("supervisor", Supervisor)
BUS = web.AppKey("bus", EventBus)
METRICS = web.AppKey("metrics", Metrics)


def create_app(supervisor: Supervisor, metrics: Metrics | None = None) -> web.Application:
    app = web.Application()
    app[SUPERVISOR] = supervisor
    app[BUS] = supervisor.bus
    app[METRICS] = metrics or Metrics(supervisor)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/calls", calls)
    app.router.add_post("/api/calls/{call_id}/transfer", transfer)
    app.router.add_post("/api/calls/{call_id}/release-operator", release_operator)
    app.router.add_post("/api/calls/{call_id}/hangup", hangup)
    app.router.add_get("/metrics", metrics_view)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "请求体须是 JSON / body must be JSON"}',
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "请求体须是 JSON 对象 / body must be a JSON object"}',
                                 content_type="application/json")
    return body


def _wait_seconds(body: dict[str, Any]) -> float:
    w = body.get("wait", 0)
    if not isinstance(w, int | float) or not 0 <= w <= 300:
        raise web.HTTPBadRequest(text='{"error": "wait 须是 0..300 秒 / wait must be 0..300 seconds"}',
                                 content_type="application/json")
    return float(w)


async def health(request: web.Request) -> web.Response:
    h = request.app[SUPERVISOR].health()
    return web.json_response(h, status=200 if h["ok"] else 503)


async def calls(request: web.Request) -> web.Response:
    return web.json_response({"calls": request.app[SUPERVISOR].calls()})


async def metrics_view(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _act_and_wait(request: web.Request, act: Any, outcome: Any, wait: float) -> web.Response:
    """Run ``act()`` (which names the call) and, with ``wait``, answer with the first outcome fact."""
    sup = request.app[SUPERVISOR]
    bus = request.app[BUS]
    box: dict[str, str] = {}

    def matches(item: Item) -> bool:
        return isinstance(item, WorkerFact) and item.call_id == box.get("call_id") and outcome(item.fact)

    waiter = asyncio.ensure_future(bus.next(matches, wait)) if wait else None
    await asyncio.sleep(0)  # the waiter is subscribed before anything can happen
    try:
        result = act(sup)
    except LookupError as e:
        return _cancel(waiter, _error(404, str(e)))
    except ValueError as e:
        return _cancel(waiter, _error(400, str(e)))
    box["call_id"] = result["call_id"]
    if waiter is None:
        return web.json_response(result, status=202)
    try:
        item = await waiter
    except TimeoutError:
        return web.json_response({**result, "status": "timeout",
                                  "error": f"{wait:.0f} 秒内没有结果 / no outcome within {wait:.0f} s"}, status=504)
    fact = item.fact  # type: ignore[union-attr]
    ok = not (isinstance(fact, P.TransferUpdate) and fact.step == P.TransferStep.FAILED) \
        and not isinstance(fact, P.WorkerError)
    detail = {"status": item.kind, "reason": getattr(fact, "reason", "") or getattr(fact, "message", ""),
              "sip_status": getattr(fact, "status", 0)}
    return web.json_response({**result, **detail}, status=200 if ok else 502)


def _cancel(waiter: Any, response: web.Response) -> web.Response:
    if waiter is not None:
        waiter.cancel()
    return response


def _transfer_outcome(f: P.Fact) -> bool:
    return isinstance(f, P.TransferUpdate) and f.step in (P.TransferStep.BRIDGED, P.TransferStep.COMPLETED,
                                                          P.TransferStep.FAILED)


async def transfer(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body.get("target"), str):
        return _error(400, "缺少 target / missing target, e.g. {\"target\": \"12345\"}")
    call_id, wait = request.match_info["call_id"], _wait_seconds(body)
    return await _act_and_wait(request, lambda s: s.transfer(call_id, body["target"], body.get("mode")),
                               _transfer_outcome, wait)


async def release_operator(request: web.Request) -> web.Response:
    body = await _body(request)
    call_id, wait = request.match_info["call_id"], _wait_seconds(body)
    return await _act_and_wait(
        request, lambda s: s.release_operator(call_id),
        lambda f: (isinstance(f, P.TransferUpdate) and f.step == P.TransferStep.COMPLETED)
        or isinstance(f, P.WorkerError), wait)


async def hangup(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    return await _act_and_wait(request, lambda s: s.hangup(call_id), lambda f: isinstance(f, P.CallEnded), 0)
