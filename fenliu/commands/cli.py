"""The `fenliu` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fenliu.errors import FenliuError

if TYPE_CHECKING:
    from fenliu.settings import Settings


def _channel(v: str) -> int | str:
    return v if v == "mix" else int(v)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fenliu", description="110 非警务警情分流 / divert non-police 110 calls")
    p.add_argument("--config", default=os.environ.get("FENLIU_CONFIG"),
                   help="settings TOML file (default: built-in defaults; env FENLIU_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("classify", help="route a text, or JSON lines, and print decisions as JSON")
    c.add_argument("text", nargs="?", help="caller text")
    c.add_argument("--jsonl", metavar="FILE", help="read {id, text} JSON lines from FILE ('-' = stdin)")
    c.add_argument("--rules", help="negative list TOML (default: router.rules_path or the built-in list)")
    c.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4),
                   help="processes for --jsonl (default: CPU cores, at most 4)")
    c.add_argument("--router-model", help='learned layer: "default", "none" (rules alone) or an artefact folder '
                                          "(default: router.model)")

    rm = sub.add_parser("router-model", help="the router's learned layer (trained on fenliu/router/corpus)")
    rms = rm.add_subparsers(dest="router_model_command", required=True)
    rmb = rms.add_parser("build", help="retrain from the corpus (deterministic) and write the artefact")
    rmb.add_argument("--out", type=Path, help="artefact folder (default: the one shipped in fenliu/router/model)")
    rmb.add_argument("--corpus", type=Path, help="corpus folder (default: fenliu/router/corpus)")
    rmc = rms.add_parser("check", help="load an artefact and say what it is")
    rmc.add_argument("path", nargs="?", help="artefact folder (default: router.model)")

    r = sub.add_parser("rules", help="negative list tools")
    rs = r.add_subparsers(dest="rules_command", required=True)
    rc = rs.add_parser("check", help="validate a negative list file")
    rc.add_argument("file", nargs="?")

    fl = sub.add_parser("flow", help="IVR flow tools (docs/flows.md)")
    fls = fl.add_subparsers(dest="flow_command", required=True)
    flc = fls.add_parser("check", help="load a flow as the service would: states, targets, prompts (made and cached)")
    flc.add_argument("file", nargs="?", help="flow file (default: ivr.flow, else the shipped front_desk)")
    flc.add_argument("--no-prompts", action="store_true", help="check the flow only; do not make the prompts")
    flg = fls.add_parser("graph", help="draw a flow: Graphviz DOT, or SVG/PNG/PDF rendered by dot")
    flg.add_argument("file", nargs="?", help="flow file (default: ivr.flow, else the shipped front_desk)")
    flg.add_argument("-o", "--out", type=Path, required=True, help="output: flow.svg, flow.png, flow.pdf or flow.dot")

    for name, help_ in (("replay", "run a recorded call through the live chain"),
                        ("transcribe", "batch-process a folder of recordings into a report")):
        x = sub.add_parser(name, help=help_)
        x.add_argument("path", help="CALL.wav" if name == "replay" else "DIR of .wav files")
        x.add_argument("--model", help="Vosk model path or name (overrides asr.model)")
        x.add_argument("--channel", type=_channel, default=0, help="channel to use: 0, 1, … or mix (default 0)")
        x.add_argument("--rules", help="negative list TOML")
        x.add_argument("--no-vad", action="store_true", help="feed all audio to the recogniser (no VAD gating)")
    rp = sub.choices["replay"]
    rp.add_argument("--realtime", action="store_true", help="pace the audio as a live call would")
    rp.add_argument("--json", action="store_true", help="write events as JSON lines")
    rp.add_argument("--reference", help="with no model: route this reference transcript (labelled as such)")
    tr = sub.choices["transcribe"]
    tr.add_argument("--out", default="transcribe-report.jsonl", help="report file (.jsonl or .csv)")

    m = sub.add_parser("model", help="ASR model tools")
    ms = m.add_subparsers(dest="model_command", required=True)
    mf = ms.add_parser("fetch", help="download a Vosk model (small-cn = vosk-model-small-cn-0.22)")
    mf.add_argument("name")
    mf.add_argument("--dir", help="destination folder (default asr.model_dir or ~/.cache/vosk)")
    mf.add_argument("--list-url", help="model list URL (default: Vosk's own)")
    mf.add_argument("--base-url", help="base URL of the model zips (default: Vosk's own)")
    mp = ms.add_parser("path", help="print where the configured model is")
    mp.add_argument("--model")

    d = sub.add_parser("doctor", help="check dependencies and configuration")
    d.add_argument("--no-load", action="store_true", help="do not load the ASR model")
    d.add_argument("--model", help="check this Vosk model path or name instead of asr.model")

    sv = sub.add_parser("serve", help="run the SIP workers and the live ASR/router chain")
    sv.add_argument("--model", help="Vosk model path or name (overrides asr.model)")
    sv.add_argument("--workers", type=int, help="number of SIP worker processes (overrides sip.workers)")
    sv.add_argument("--port", type=int, help="first SIP port (overrides sip.port)")
    sv.add_argument("--json", action="store_true", help="events as JSON lines")

    fr = sub.add_parser("front", help="run only the Kamailio front (one trunk address, fail-open) for the "
                                      "workers of one or more fenliu instances")
    fr.add_argument("--instances", help="worker SIP addresses, comma separated, host:port or host:first-last "
                                        "(default: this config's workers, sip.address:sip.port..+workers-1)")
    fr.add_argument("--address", help="address to listen on (default: sip.address)")
    fr.add_argument("--port", type=int, help="port to listen on (default: sip.front_port, else 5060)")
    fr.add_argument("--fallback", help="fail-open SIP URI, the operators (default: sip.fallback_uri; empty: 503)")

    cl = sub.add_parser("calls", help="list live calls (asks the running fenliu serve)")
    cl.add_argument("--url", help="API base URL (default: http://console.host:console.port)")
    tf = sub.add_parser("transfer", help="one key: transfer a live call to a hotline")
    tf.add_argument("call_id", help="call id (or its first characters) from fenliu calls")
    tf.add_argument("target", help="target id (12345, 12348, 12328, 12338, 95598, social) or a sip: URI")
    tf.add_argument("--mode", choices=["three-way", "refer", "attended"], help="default: transfer.mode")
    tf.add_argument("--timeout", type=float, help="wait this long for the outcome (default: transfer.answer_timeout + 5 s)")
    tf.add_argument("--url")
    rl = sub.add_parser("release", help="the operator leaves a three-way call (caller and hotline stay)")
    rl.add_argument("call_id")
    rl.add_argument("--timeout", type=float, default=10.0, help="wait this long for the outcome")
    rl.add_argument("--url")

    dr = sub.add_parser("drain", help="take the running fenliu serve out of rotation: no new calls (the front sends "
                                      "them to another instance); it stops once its live calls have ended")
    dr.add_argument("--url")

    for x in (cl, tf, rl, dr):
        x.add_argument("--token", help="API token (default: env FENLIU_TOKEN, else the token fenliu serve leaves "
                                       "beside the store, var/cli-<console port>.token)")

    us = sub.add_parser("user", help="console accounts (operator, supervisor, admin)")
    uss = us.add_subparsers(dest="user_command", required=True)
    ua = uss.add_parser("add", help="create an account; the password is asked for (or read from stdin)")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["operator", "supervisor", "admin"])
    ua.add_argument("--seat", default="", help="the operator's seat (sip.seat_uri user part); empty: all calls")
    ua.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    up = uss.add_parser("passwd", help="set an account's password (ends its sessions)")
    up.add_argument("name")
    up.add_argument("--password-stdin", action="store_true")
    uss.add_parser("list", help="list accounts")
    ur = uss.add_parser("role", help="change an account's role (ends its sessions and event streams)")
    ur.add_argument("name")
    ur.add_argument("role", choices=["operator", "supervisor", "admin"])
    for verb, text in (("disable", "switch an account off: its sessions, tokens and event streams end at once"),
                       ("enable", "switch an account on again")):
        uss.add_parser(verb, help=text).add_argument("name")
    tk = sub.add_parser("token", help="API tokens for machine clients (PBX/CTI, scripts)")
    tks = tk.add_subparsers(dest="token_command", required=True)
    tc = tks.add_parser("create", help="make a token acting as USER; printed once, stored hashed")
    tc.add_argument("name")
    tc.add_argument("--user", required=True)
    tr = tks.add_parser("revoke", help="revoke every token of that name")
    tr.add_argument("name")

    db = sub.add_parser("db", help="the store (SQLite file or PostgreSQL database)")
    dbs = db.add_subparsers(dest="db_command", required=True)
    dbs.add_parser("upgrade", help="bring the store's schema up to this version (run before rolling out)")
    dbs.add_parser("status", help="say which store, which schema version, and what the outbox holds")
    dbp = dbs.add_parser("purge", help="apply the retention settings now (store.transcript_days, recording_days)")
    dbp.add_argument("--dry-run", action="store_true")
    ob = sub.add_parser("outbox", help="deliver work orders and SMS (fenliu serve does this itself)")
    obs = ob.add_subparsers(dest="outbox_command", required=True)
    obr = obs.add_parser("run", help="run only the outbox: one more deliverer beside fenliu serve, or a lone one")
    obr.add_argument("--once", action="store_true", help="deliver what is due now, then stop")
    rp = sub.add_parser("report", help="the figures (分流率, 派出率, 有效办结率, 满意率, 回流) for a date range, offline")
    rp.add_argument("--from", dest="day_from", required=True, help="first day, YYYY-MM-DD")
    rp.add_argument("--to", dest="day_to", required=True, help="last day (included), YYYY-MM-DD")
    rp.add_argument("--format", choices=["text", "csv", "xlsx", "json"], default="text")
    rp.add_argument("--out", default="", help="file to write (csv/xlsx/json); text goes to stdout")
    rp.add_argument("--labels", default="", help="also write the operators' final actions as labelled JSON lines "
                                                  "(for a router retrain)")
    rp.add_argument("--full-numbers", action="store_true", help="do not mask callers' numbers (audited)")

    dl = sub.add_parser("dial", help="place a real SIP call that plays a recording (拨测)")
    dl.add_argument("wav")
    dl.add_argument("--to", help="SIP URI to call (default: sip:110@sip.address:sip.port)")
    dl.add_argument("--ring-timeout", type=float, default=30.0, help="give up if not answered in N s")

    dm = sub.add_parser("demo", help="the main job: replay the fixture calls through the whole chain")
    dm.add_argument("--fixtures", type=Path, help="fixture folder (default: audio_fixtures/)")
    dm.add_argument("--model", help="Vosk model path or name")
    dm.add_argument("--json", action="store_true")
    dm.add_argument("--live", action="store_true",
                    help="live: SIP workers, local test hotlines, fixtures dialled as real calls, one-key transfer")
    dm.add_argument("--limit", type=int, help="--live: dial only the first N fixtures, then end (without it the "
                                              "console stays up after the last call until Ctrl-C)")
    dm.add_argument("--no-ivr", action="store_true",
                    help="--live: skip the voice front desk calls (by default a diversion and a danger fixture are "
                         "dialled to the front desk's number after the operator's calls)")
    dm.add_argument("--key-wait", type=float, default=8.0,
                    help="--live: seconds the operator has to press the key before the demo presses it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except FenliuError as e:
        print(f"错误 / error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM where a command turned it into Terminated
        from fenliu.errors import Terminated

        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:
        return 0


def _run(args: argparse.Namespace) -> int:
    from fenliu.settings import load_settings

    settings = load_settings(args.config)
    cmd = args.command
    if cmd == "rules":
        from fenliu.router import load_rules

        rules = load_rules(args.file)
        words = len(rules.all_words())
        print(f"✔ {rules.source}: version {rules.version}, {len(rules.categories)} categories, "
              f"{len(rules.danger)} danger groups, {words} words")
        return 0
    if cmd == "flow":
        return _flow(args, settings)
    if cmd == "router-model":
        return _router_model(args, settings.router.model)
    if cmd == "doctor":
        from fenliu.commands.doctor import format_checks, run_checks

        if args.model:
            from dataclasses import replace

            settings = replace(settings, asr=replace(settings.asr, model=args.model))
        checks = run_checks(settings, load_model=not args.no_load)
        print(format_checks(checks))
        return 0 if all(c.ok or not c.required for c in checks) else 1
    if cmd == "model":
        from fenliu.asr.models import fetch_model, resolve_model

        if args.model_command == "path":
            print(resolve_model(args.model or settings.asr.model, settings.asr.model_dir or None))
            return 0
        path = fetch_model(args.name, args.dir or settings.asr.model_dir or None, list_url=args.list_url,
                           zip_base=args.base_url, progress=sys.stderr.isatty())
        print(f"✔ {path}\n  使用 / use it: set asr.model = \"{path}\" or pass --model {path}")
        return 0

    if cmd == "front":
        from fenliu.sip.front.kamailio import parse_workers, run_front

        sip = settings.sip
        workers = parse_workers(args.instances or f"{sip.address}:{sip.port}-{sip.port + sip.workers - 1}")
        return run_front(args.address or sip.address, args.port or sip.front_port or 5060, workers,
                         sip.fallback_uri if args.fallback is None else args.fallback,
                         lambda line: print(line, flush=True), sip.front_timeout)

    if cmd in ("calls", "transfer", "release", "drain"):
        return _api_command(args, settings)
    if cmd == "db":
        return _db(args, settings)
    if cmd == "outbox":
        return _outbox(args, settings)
    if cmd == "report":
        from fenliu.loop.report import run_report

        return run_report(settings, args.day_from, args.day_to, args.out, args.format,
                          full_numbers=args.full_numbers, labels_out=args.labels or None)
    if cmd in ("user", "token"):
        return _accounts_command(args, settings)
    if cmd == "dial":
        from fenliu.commands.dial import dial

        return dial(args.wav, args.to or f"sip:110@{settings.sip.address}:{settings.sip.port}",
                    ring_timeout=args.ring_timeout)

    from fenliu.service.wiring import build_engine, build_router

    if cmd == "classify":
        return _classify(args, args.rules or settings.router.rules_path or None, args.router_model or settings.router.model)
    router = build_router(settings, getattr(args, "rules", None))
    if cmd == "serve":
        from dataclasses import replace

        from fenliu.commands.serve import run_serve

        sip = settings.sip
        sip = replace(sip, workers=args.workers or sip.workers, port=args.port or sip.port)
        settings = replace(settings, sip=sip)
        ivr = None
        if settings.ivr.flow:  # a bad flow or prompt is reported before the model takes its seconds to load
            from fenliu.service.ivr import load as load_ivr

            ivr = load_ivr(settings)
        return run_serve(settings, router, build_engine(settings, args.model), args.json, ivr)
    if cmd == "demo" and args.live:
        from fenliu.commands.live_demo import run_live_demo
        from fenliu.errors import ModelError

        try:
            engine = build_engine(settings, args.model)
        except ModelError as e:
            print(f"注意 / note: {e}", file=sys.stderr)
            engine = None
        return run_live_demo(settings, router, engine, sys.stdout, args.fixtures, args.limit, args.key_wait,
                             ivr_demo=not args.no_ivr)
    if cmd == "demo":
        from fenliu.commands.demo import run_demo

        return run_demo(settings, router, sys.stdout, args.fixtures, args.model, args.json)
    if cmd == "replay":
        from fenliu.commands.offline import replay_events, write_events
        from fenliu.errors import ModelError

        engine = None
        try:
            engine = build_engine(settings, args.model)
        except ModelError:
            if not args.reference:
                raise
            print("注意 / note: no ASR model; routing the --reference text (not recognition)", file=sys.stderr)
        events = replay_events(args.path, settings, engine, router, realtime=args.realtime, channel=args.channel,
                               reference_text=args.reference if engine is None else None,
                               vad_enabled=False if args.no_vad else None)
        write_events(events, sys.stdout, args.json)
        return 0
    if cmd == "transcribe":
        from fenliu.commands.offline import transcribe_dir, write_report

        engine = build_engine(settings, args.model)
        if args.no_vad:
            from dataclasses import replace

            settings = replace(settings, vad=replace(settings.vad, enabled=False))
        reports = transcribe_dir(args.path, settings, engine, router, channel=args.channel,
                                 progress=sys.stderr.isatty())
        write_report(reports, args.out)
        bad = [r for r in reports if not r.ok]
        for r in bad:
            print(f"✘ {r.file}: {r.error}", file=sys.stderr)
        print(f"{len(reports) - len(bad)}/{len(reports)} files processed → {args.out}")
        return 1 if bad and len(bad) == len(reports) else 0
    raise AssertionError(cmd)


def _flow(args: argparse.Namespace, settings) -> int:
    from fenliu.ivr_flows.flow import load_flow
    from fenliu.service.ivr import all_targets, flow_path
    from fenliu.service.ivr import load as load_ivr

    path = str(flow_path(args.file or settings.ivr.flow or "front_desk"))
    if args.flow_command == "graph":
        from fenliu.ivr_flows.graph import render

        out = render(load_flow(path, all_targets(settings)), args.out)
        print(f"✔ {out}")
        return 0
    if args.no_prompts:
        flow = load_flow(path, all_targets(settings))
        print(f"✔ {flow.path}: flow {flow.name}, {len(flow.states)} states, {len(flow.prompts)} prompts (not made)")
        return 0
    loaded = load_ivr(settings, path)
    flow, cache = loaded.flow, loaded.cache
    made = getattr(cache, "stats", {})
    print(f"✔ {flow.path}: flow {flow.name}, {len(flow.states)} states, start {flow.start}; "
          f"{len(loaded.prompts)} prompts in {settings.ivr.cache_dir} {made}")
    return 0


def _api_command(args: argparse.Namespace, settings) -> int:
    import urllib.error
    import urllib.request

    from fenliu.console.server import cli_token_path

    base = (args.url or f"http://{settings.console.host}:{settings.console.port}").rstrip("/")
    token = _cli_token(args, settings)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    wait = 0.0
    if args.command == "calls":
        req = urllib.request.Request(f"{base}/api/calls", headers=auth)
    elif args.command == "drain":
        req = urllib.request.Request(f"{base}/api/drain", method="POST", data=b"{}",
                                     headers={"Content-Type": "application/json", **auth})
    else:
        path = "transfer" if args.command == "transfer" else "release-operator"
        wait = args.timeout if args.timeout is not None else settings.transfer.answer_timeout + 5
        body = {"target": args.target, "mode": args.mode, "wait": wait} if args.command == "transfer" \
            else {"wait": wait}
        req = urllib.request.Request(f"{base}/api/calls/{args.call_id}/{path}", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json",
                                                                              **auth})
    try:
        with urllib.request.urlopen(req, timeout=wait + 10) as r:
            data = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            data = json.loads(e.read() or b"{}")
        except ValueError:
            data = {}
        if e.code in (502, 504) and "status" in data:  # the outcome: failed, or none in time
            print(json.dumps(data, ensure_ascii=False))
            what = "转接失败 / transfer failed" if args.command == "transfer" else "操作失败 / release failed"
            if e.code == 504:
                what = "没有结果 / no outcome"
            print(f"✘ {what}: {data.get('reason') or data.get('error', '')}; 来电仍由接警员处理 / the caller stays "
                  f"with the operator", file=sys.stderr)
            return 1
        if e.code == 401:
            raise FenliuError(f"401: {data.get('error', e.reason)} — the CLI reads its token from "
                              f"{cli_token_path(settings)} (written by fenliu serve; run as the same account), "
                              f"or --token / FENLIU_TOKEN (fenliu token create NAME --user USER)") from e
        raise FenliuError(f"{e.code}: {data.get('error', e.reason)}") from e
    except urllib.error.URLError as e:
        raise FenliuError(f"无法连接 fenliu serve / cannot reach fenliu serve at {base} ({e.reason}); "
                          f"is it running? (console.host / console.port)") from e
    if args.command == "drain":
        print(f"正在排空：不再接新来电，{data.get('live_calls', 0)} 通电话结束后 fenliu serve 停止 / draining: no new calls; "
              f"fenliu serve stops when its {data.get('live_calls', 0)} live call(s) have ended")
    elif args.command == "calls":
        rows = data["calls"]
        if not rows:
            print("没有通话 / no live calls")
        for c in rows:
            flag = f"  ⚠ {c['degraded']}" if c.get("degraded") else ""
            print(f"{c['call_id']}  {c['worker']}  {c.get('state', '')}  {c['remote']}{flag}")
    else:
        print(json.dumps(data, ensure_ascii=False))
        print(f"✔ {data.get('status')}", file=sys.stderr)
    return 0


def _cli_token(args: argparse.Namespace, settings) -> str:
    from fenliu.console.server import cli_token_path

    token = args.token or os.environ.get("FENLIU_TOKEN", "")
    if token:
        return str(token)
    try:
        return cli_token_path(settings).read_text(encoding="utf-8").strip()
    except OSError:
        return ""  # the server will say 401, and we say where a token comes from


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("密码 / password: ")
    if getpass.getpass("再输一次 / again: ") != first:
        raise FenliuError("两次输入的密码不一致 / the passwords differ")
    return first


def _accounts_command(args: argparse.Namespace, settings) -> int:
    from fenliu.console.auth import Accounts
    from fenliu.store.record import Store

    store = Store(settings.store.url)
    accounts = Accounts(store)
    try:
        if args.command == "user" and args.user_command == "list":
            for row in store.users():
                if row["name"] != "cli":
                    print(f"{row['name']:20} {row['role']:11} {row['seat'] or '-':10} "
                          f"{'停用 disabled' if row['disabled'] else ''}")
        elif args.command == "user" and args.user_command == "add":
            u = accounts.add_user(args.name, args.role, _read_password(args.password_stdin), args.seat)
            store.audit("cli", "user_add", outcome="ok", detail={"name": u.name, "role": u.role})
            print(f"✔ 账户 {u.name} ({u.role}) 已创建 / account created")
        elif args.command == "user" and args.user_command in ("role", "disable", "enable"):
            role = args.role if args.user_command == "role" else None
            off = None if args.user_command == "role" else args.user_command == "disable"
            if not store.set_user(args.name, role=role, disabled=off):
                raise ValueError(f"没有账户 {args.name!r} / no user {args.name!r}")
            store.audit("cli", f"user_{args.user_command}", outcome="ok", detail={"name": args.name, "role": role})
            print(f"✔ {args.name}: {args.user_command} — 其会话与事件流已结束 / its sessions and event streams have ended")
        elif args.command == "user":
            accounts.set_password(args.name, _read_password(args.password_stdin))
            store.audit("cli", "user_passwd", outcome="ok", detail={"name": args.name})
            print(f"✔ {args.name}: 密码已更新 / password set; its sessions have ended")
        elif args.token_command == "create":
            token = accounts.create_token(args.name, args.user)
            store.audit("cli", "token_create", outcome="ok", detail={"name": args.name, "user": args.user})
            print(token)
            print("↑ 只显示这一次，请妥善保存 / shown once: keep it safe", file=sys.stderr)
        else:
            n = store.revoke_token(args.name)
            store.audit("cli", "token_revoke", outcome="ok", detail={"name": args.name, "revoked": n})
            print(f"✔ {n} token(s) revoked")
    except ValueError as e:
        raise FenliuError(str(e)) from e
    finally:
        store.close()
    return 0


def _classify(args: argparse.Namespace, rules_path: str | None, model: str) -> int:
    from fenliu.commands.classify import classify_lines, classify_lines_parallel
    from fenliu.service.wiring import make_router

    router = make_router(rules_path, model)  # validate once, up front, so a bad list or model fails clearly

    if args.jsonl:
        if args.jsonl == "-":
            src = sys.stdin
        else:
            try:
                src = open(args.jsonl, encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                raise FenliuError(f"{args.jsonl}: 无法打开 / cannot open ({e.strerror})") from e
        out = sys.stdout
        with src:
            results = (classify_lines_parallel(src, args.workers, rules_path, model) if args.workers > 1
                       else classify_lines(router, src))
            for obj in results:
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        out.flush()
        return 0
    if not args.text:
        raise FenliuError("给出文本或 --jsonl FILE / give a text, or --jsonl FILE")
    d = router.decide(args.text)
    print(json.dumps(d.to_dict(), ensure_ascii=False, indent=2))
    return 0


def _router_model(args: argparse.Namespace, configured: str) -> int:
    from fenliu.router.model import default_dir, load_model

    if args.router_model_command == "build":
        from fenliu.router.training import Trainer

        out = args.out or default_dir()
        report = Trainer().build(out, args.corpus)
        print("\n".join(report.lines))
        return 0
    path = args.path or (None if configured in ("default", "none") else configured)
    m = load_model(path)
    t = m.meta.get("trained_on", {})
    print(f"✔ {m.source}: version {m.version}, {len(m.index)} features, {len(m.categories)} categories; "
          f"trained on {t.get('cases', '?')} cases (+{t.get('asr_copies', '?')} ASR copies) by "
          f"{len(t.get('authors', {}))} authors; held out: {', '.join(t.get('heldout', []))}")
    print(f"  thresholds: {m.thresholds}")
    return 0


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from fenliu.store.db import Database, redact
    from fenliu.store.record import Store
    from fenliu.store.schema import MIGRATIONS

    if args.db_command == "status":
        d = Database(settings.store.url)
        try:
            version = d.version()
        finally:
            d.close()
        state = "up to date" if version == len(MIGRATIONS) else (
            f"needs `fenliu db upgrade` ({version} → {len(MIGRATIONS)})" if version < len(MIGRATIONS)
            else "written by a newer fenliu")
        print(f"store {redact(settings.store.url)} ({d.dialect}): schema {version}, {state}")
        if version == len(MIGRATIONS):
            store = Store(settings.store.url, settings=settings)
            print("outbox:", ", ".join(f"{k} {v}" for k, v in sorted(store.outbox_counts().items())) or "empty")
            store.close()
        return 0 if version <= len(MIGRATIONS) else 1
    store = Store(settings.store.url, settings=settings)
    try:
        if args.db_command == "upgrade":
            before = store.upgraded_from
            print(f"✔ {redact(settings.store.url)}: schema {before} → {store.version}"
                  + (" (already up to date)" if before == store.version else ""))
            return 0
        from fenliu.store.retention import purge

        for line in purge(store, settings, dry_run=args.dry_run):
            print(line)
        return 0
    finally:
        store.close()


def _outbox(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import signal

    from fenliu.loop.outbox import Outbox
    from fenliu.store.record import Store

    async def main() -> int:
        store = Store(settings.store.url, settings=settings)
        outbox = Outbox(store, settings)
        try:
            if args.once:
                n = await outbox.deliver_due()
                print(f"outbox: {n} item(s) tried, {outbox.delivered} delivered, {outbox.retried} to retry, "
                      f"{outbox.refused} refused")
                await outbox.close()
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            print(f"fenliu outbox: delivering from {settings.store.url.split('@')[-1]}; Ctrl-C to stop",
                  file=sys.stderr, flush=True)
            await outbox.run(stop)
            return 0
        finally:
            store.close()

    return asyncio.run(main())


if __name__ == "__main__":
    sys.exit(main())
