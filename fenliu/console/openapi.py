"""The OpenAPI 3.1 description served at ``GET /api/openapi.json``, built from the API's route
table (so a route cannot be added without appearing here) and the summaries below. The prose
reference is docs/api.md."""

from __future__ import annotations

from typing import Any

from fenliu import __version__

SUMMARIES = {
    "/api/health": "运行/停止（班长或令牌可见各工作进程详情）/ up or down (503 if a worker is down); every worker and "
                   "ASR process as it is for a supervisor's session or token",
    "/api/ready": "就绪：工作进程在线、识别器已预热 / ready: workers alive and recognisers warm",
    "/api/login": "登录，设置会话 Cookie，返回 CSRF 令牌 / log in: sets the session cookie, returns the CSRF token",
    "/api/logout": "退出登录 / end the session",
    "/api/me": "当前用户与 CSRF 令牌 / the current user and the session's CSRF token",
    "/api/config": "转接目标、紧急联动、默认转接方式 / targets, urgent lane, links, default mode",
    "/api/calls": "当前通话（含最新分流建议；多实例时为全中心，每通带 instance）/ live calls with their latest "
                  "decision (with several instances on PostgreSQL: the whole centre's, each with its instance)",
    "/api/controls": "全中心开关：暂停/恢复分流建议、语音前台分流（班长）/ centre-wide switches: stop or resume "
                     "diversion suggestions and the IVR's offers (supervisors set them)",
    "/api/calls/{call_id}": "一通电话：转写、决策记录、转接结果 / one call: transcript, decision trail, transfers",
    "/api/calls/{call_id}/transfer": "一键转接 / the one key: transfer to a hotline (three-way, refer, attended)",
    "/api/calls/{call_id}/cancel-transfer": "振铃中取消转接 / cancel a transfer while the hotline rings",
    "/api/calls/{call_id}/release-operator": "接警员退出三方通话 / the operator leaves the three-way call",
    "/api/calls/{call_id}/hangup": "挂断 / hang up the call",
    "/api/history": "历史通话检索 / search past calls (q, number, from, to, category, target)",
    "/api/events": "事件流 (WebSocket)，?since=<id> 断线续传 / event stream (WebSocket), resume with ?since",
    "/api/negative-list": "负面清单：查看 (GET)，校验并保存 (PUT) / the negative list: read, or validate and save",
    "/api/negative-list/reload": "重新加载负面清单（错误时保留原清单）/ reload the list (a bad list is refused)",
    "/api/audit": "审计日志 / the audit log",
    "/api/users": "账户 / accounts",
    "/api/openapi.json": "本描述 / this description",
    "/metrics": "Prometheus 指标（仅本机，或 console.metrics_token）/ metrics (loopback or its token)",
}

ERROR = {"type": "object", "required": ["error", "code"],
         "properties": {"error": {"type": "string"}, "code": {"type": "string"}}}
ENVELOPE = {
    "type": "object", "required": ["id", "at", "kind", "call_id", "leg", "worker", "data"],
    "properties": {
        "id": {"type": "integer", "description": "strictly increasing per server run; resume with ?since=<id>"},
        "at": {"type": "number", "description": "unix seconds"},
        "kind": {"type": "string", "enum": [
            "hello", "call_started", "call_answered", "call_ended", "partial_transcript", "final_transcript",
            "speech_started", "speech_stopped", "decision", "transfer_started", "transfer_progress",
            "transfer_consulted", "transfer_bridged", "transfer_completed", "transfer_failed", "leg_dialing",
            "leg_answered", "leg_ended", "call_degraded", "media_timeout", "media_probe", "leg_held", "reinvite_limited", "dtmf", "worker_lost",
            "worker_restarted", "restart_failed", "front_event", "orphans_released", "call_rejected",
            "negative_list_reloaded", "operator_action"]},
        "call_id": {"type": "string"}, "leg": {"type": "string"}, "worker": {"type": "string"},
        "data": {"type": "object", "description": "fields per kind: see docs/api.md"},
    },
}
STATUS_TEXT = {200: "OK", 201: "created", 202: "requested (outcome follows on the event stream)",
               400: "bad input", 401: "not logged in / session expired / bad token", 403: "role, CSRF, Origin or Host",
               404: "no such call", 409: "the call has ended / cannot reload", 413: "body too large",
               422: "invalid negative list (file:line)", 429: "too many failed logins",
               502: "transfer failed (reason, sip_status)",
               503: "not healthy / not ready; a key for a call whose instance is gone or did not take it "
                    "(instance_unavailable: nothing was done)",
               504: "no outcome within wait"}


def describe(routes: list[tuple[str, str, Any, Any]]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, _handler, access in routes:
        op: dict[str, Any] = {"summary": SUMMARIES.get(path, path), "operationId": f"{method.lower()}{_op(path)}",
                              "responses": _responses(method, path)}
        if access.role is None:
            op["security"] = []
        else:
            op["x-role"] = access.role
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in _path_params(path)]
        if path == "/api/events":
            params.append({"name": "since", "in": "query", "schema": {"type": "integer"}})
            params.append({"name": "server", "in": "query", "schema": {"type": "string"}})
        if params:
            op["parameters"] = params
        if method in ("POST", "PUT"):
            op["requestBody"] = {"content": {"application/json": {"schema": _request(path)}}}
            if access.role is not None:
                op["parameters"] = op.get("parameters", []) + [
                    {"name": "X-CSRF-Token", "in": "header", "required": False, "schema": {"type": "string"},
                     "description": "required with the session cookie; not with a bearer token"}]
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "fenliu 分流 API", "version": __version__,
                 "description": "110 非警务警情分流：通话、转写、分流建议、一键转接、负面清单。See docs/api.md."},
        "paths": paths,
        "components": {
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "fenliu_session"},
                                "token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR, "Event": ENVELOPE},
        },
        "security": [{"session": []}, {"token": []}],
    }


def _op(path: str) -> str:
    return "".join(p.strip("{}").replace("-", "_").replace(".", "_").title() for p in path.split("/") if p)


def _path_params(path: str) -> list[str]:
    return [p[1:-1] for p in path.split("/") if p.startswith("{")]


def _request(path: str) -> dict[str, Any]:
    if path.endswith("/transfer"):
        return {"type": "object", "required": ["target"], "properties": {
            "target": {"type": "string", "description": "target id (12345 …) or sip: URI"},
            "mode": {"type": "string", "enum": ["three-way", "refer", "attended"]},
            "wait": {"type": "number", "minimum": 0, "maximum": 300}}}
    if path == "/api/login":
        return {"type": "object", "required": ["username", "password"],
                "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}
    if path == "/api/negative-list":
        return {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
    if path == "/api/users":
        return {"type": "object", "required": ["name", "role", "password"], "properties": {
            "name": {"type": "string"}, "role": {"type": "string", "enum": ["operator", "supervisor", "admin"]},
            "password": {"type": "string", "minLength": 8}, "seat": {"type": "string"}}}
    return {"type": "object", "properties": {"wait": {"type": "number", "minimum": 0, "maximum": 300}}}


def _responses(method: str, path: str) -> dict[str, Any]:
    codes = [200]
    if path.startswith("/api/calls/{call_id}/"):
        codes = [200, 202, 400, 404, 409, 502, 503, 504]
    elif path.startswith("/api/negative-list") and method != "GET":
        codes = [200, 409, 422]
    elif path in ("/api/health", "/api/ready"):
        codes = [200, 503]
    elif path == "/api/login":
        codes = [200, 401, 429]
    elif path == "/api/users" and method == "POST":
        codes = [201, 400]
    if path not in ("/api/health", "/api/ready", "/metrics") and path != "/api/login":
        codes += [401, 403]
    if method in ("POST", "PUT"):
        codes += [413]
    out: dict[str, Any] = {}
    for c in sorted(set(codes)):
        schema = {"$ref": "#/components/schemas/Error"} if c >= 400 and c not in (502, 503, 504) else {"type": "object"}
        if path == "/api/events" and c == 200:
            schema = {"$ref": "#/components/schemas/Event"}
        out[str(c)] = {"description": STATUS_TEXT.get(c, ""), "content": {"application/json": {"schema": schema}}}
    return out
