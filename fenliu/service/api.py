"""The supervisor's local HTTP API (the console issue builds its UI on it; the CLI uses it).

    GET  /api/calls                              live calls
    POST /api/calls/{call_id}/transfer           {"target": "12345", "mode": "three-way"|"refer"}
    POST /api/calls/{call_id}/release-operator   the operator leaves the three-way call
    POST /api/calls/{call_id}/hangup
    GET  /api/health

Views are thin: domain errors map to 404 (no such call), 400 (bad target or mode).
"""

from __future__ import annotations

from aiohttp import web

from fenliu.service.supervisor import Supervisor

SUPERVISOR = web.AppKey("supervisor", Supervisor)


def create_app(supervisor: Supervisor) -> web.Application:
    app = web.Application()
    app[SUPERVISOR] = supervisor
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/calls", calls)
    app.router.add_post("/api/calls/{call_id}/transfer", transfer)
    app.router.add_post("/api/calls/{call_id}/release-operator", release_operator)
    app.router.add_post("/api/calls/{call_id}/hangup", hangup)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def health(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    return web.json_response({"workers": sorted(sup.links), "calls": len(sup.calls()), "restarts": sup.restarts})


async def calls(request: web.Request) -> web.Response:
    return web.json_response({"calls": request.app[SUPERVISOR].calls()})


async def transfer(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "请求体须是 JSON / body must be JSON: {\"target\": \"12345\"}")
    if not isinstance(body, dict) or not isinstance(body.get("target"), str):
        return _error(400, "缺少 target / missing target, e.g. {\"target\": \"12345\"}")
    try:
        result = request.app[SUPERVISOR].transfer(request.match_info["call_id"], body["target"], body.get("mode"))
    except LookupError as e:
        return _error(404, str(e))
    except ValueError as e:
        return _error(400, str(e))
    return web.json_response(result, status=202)


async def release_operator(request: web.Request) -> web.Response:
    try:
        return web.json_response(request.app[SUPERVISOR].release_operator(request.match_info["call_id"]), status=202)
    except LookupError as e:
        return _error(404, str(e))


async def hangup(request: web.Request) -> web.Response:
    try:
        return web.json_response(request.app[SUPERVISOR].hangup(request.match_info["call_id"]), status=202)
    except LookupError as e:
        return _error(404, str(e))
