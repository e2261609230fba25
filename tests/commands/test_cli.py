"""The `fenliu` command as a user runs it: real subprocesses, real files, real model."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT, sox

FENLIU = [sys.executable, "-m", "fenliu"]


def run(*args: str, stdin: str | None = None, env: dict | None = None, cwd: Path | None = None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([*FENLIU, *args], input=stdin, capture_output=True, text=True, env=e,
                          cwd=cwd or ROOT, timeout=300)


def test_classify_one_text_prints_a_decision():
    r = run("classify", "我们整栋楼从早上就停电了")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["target"] == "95598" and d["category"] == "停电 / 电力"
    assert d["matched"] and d["rule_version"]


def test_classify_jsonl_keeps_ids_and_survives_bad_lines(tmp_path):
    lines = [
        json.dumps({"id": "a", "text": "房东押金不退"}, ensure_ascii=False),
        "{not json",
        json.dumps({"id": "c"}),
        json.dumps({"id": "d", "text": "他拿刀砍人了"}, ensure_ascii=False),
        "",
        json.dumps([1, 2]),
    ]
    r = run("classify", "--jsonl", "-", stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o.get("id") for o in out] == ["a", None, "c", "d", None]
    assert out[0]["target"] == "12345"
    assert "error" in out[1] and out[1]["line"] == 2
    assert "text" in out[2]["error"]
    assert out[3]["target"] == "police" and out[3]["urgent"] is True
    assert out[4]["line"] == 6


def test_classify_jsonl_file_and_missing_file(tmp_path):
    f = tmp_path / "cases.jsonl"
    f.write_text("\n".join(json.dumps({"id": i, "text": "楼下KTV太吵了"}, ensure_ascii=False)
                           for i in range(50)), encoding="utf-8")
    r = run("classify", "--jsonl", str(f), "--workers", "2")
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) == 50
    single = run("classify", "--jsonl", str(f), "--workers", "1")
    assert single.stdout == r.stdout  # same decisions, same order
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == list(range(50))
    r = run("classify", "--jsonl", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2 and "cannot open" in r.stderr


def test_rules_check_reports_the_line(tmp_path):
    r = run("rules", "check")
    assert r.returncode == 0 and "22" not in r.stderr
    bad = tmp_path / "list.toml"
    src = (ROOT / "fenliu" / "router" / "negative_list.toml").read_text(encoding="utf-8")
    bad.write_text(src.replace('target = "12348"', 'target = "12399"'), encoding="utf-8")
    r = run("rules", "check", str(bad))
    assert r.returncode == 2
    assert f"{bad}:" in r.stderr and "12399" in r.stderr


@pytest.mark.slow
def test_replay_with_the_real_model_prints_partials_finals_json():
    r = run("replay", str(FIXTURES / "ko" / "ko-01-greeting.wav"), "--model", "ko-test", "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(x) for x in r.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert "PartialTranscript" in types and "FinalTranscript" in types and "Decision" in types
    assert types.index("PartialTranscript") < types.index("FinalTranscript")
    assert types[-1] == "StreamEnded"
    final = next(e for e in events if e["type"] == "FinalTranscript")
    assert final["source"] == "asr" and final["text"]


def test_replay_without_a_model_explains_and_reference_is_labelled(tmp_path):
    wav = FIXTURES / "cmn" / "cmn-06-power.wav"
    env = {"FENLIU_ASR__MODEL_DIR": str(tmp_path), "VOSK_MODEL_PATH": str(tmp_path)}
    r = run("replay", str(wav), env=env)
    assert r.returncode == 2
    assert "vosk-model-small-cn-0.22" in r.stderr and "fenliu model fetch small-cn" in r.stderr
    r = run("replay", str(wav), "--reference", "我们小区从中午开始就停电了", env=env)
    assert r.returncode == 0, r.stderr
    assert "参考文本（非识别结果）" in r.stdout and "95598" in r.stdout


def test_replay_bad_files_say_what_is_wrong(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    r = run("replay", str(empty), "--model", "ko-test")
    assert r.returncode == 2 and "empty" in r.stderr
    r = run("replay", str(tmp_path / "missing.wav"), "--model", "ko-test")
    assert r.returncode == 2 and "not found" in r.stderr


@pytest.mark.slow
def test_transcribe_dir_continues_past_broken_files(tmp_path):
    d = tmp_path / "calls"
    d.mkdir()
    for name in ("ko-01-greeting", "ko-02-help"):
        (d / f"{name}.wav").write_bytes((FIXTURES / "ko" / f"{name}.wav").read_bytes())
    sox(str(FIXTURES / "ko" / "ko-03-power.wav"), "-r", "8000", "-e", "a-law", str(d / "alaw.wav"))
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    (d / "empty.wav").write_bytes(b"")
    out = tmp_path / "report.csv"
    r = run("transcribe", str(d), "--model", "ko-test", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "3/5 files processed" in r.stdout
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    by = {row["file"]: row for row in rows}
    assert set(by) == {"ko-01-greeting.wav", "ko-02-help.wav", "alaw.wav", "broken.wav", "empty.wav"}
    assert by["alaw.wav"]["ok"] == "True" and by["alaw.wav"]["transcript"]
    assert by["broken.wav"]["ok"] == "False" and by["broken.wav"]["error"]
    assert "empty" in by["empty.wav"]["error"]
    jl = tmp_path / "report.jsonl"
    r = run("transcribe", str(d), "--model", "ko-test", "--out", str(jl))
    assert len(jl.read_text(encoding="utf-8").splitlines()) == 5


def test_demo_without_chinese_model_says_so_and_runs_the_chain(tmp_path):
    env = {"FENLIU_ASR__MODEL_DIR": str(tmp_path), "VOSK_MODEL_PATH": str(tmp_path)}
    r = run("demo", env=env)
    assert r.returncode == 0, r.stderr
    assert "未找到中文 ASR 模型" in r.stdout and "fenliu model fetch small-cn" in r.stdout
    assert "参考文本（非识别结果）" in r.stdout
    assert "开始说话" in r.stdout  # the VAD really ran on the audio
    manifest = [json.loads(x) for x in (FIXTURES / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    n = sum(1 for m in manifest if m["lang"] == "cmn")
    assert f"{n}/{n} 与预期一致" in r.stdout


def test_doctor_reports_missing_model_and_fix(tmp_path):
    env = {"FENLIU_ASR__MODEL_DIR": str(tmp_path), "VOSK_MODEL_PATH": str(tmp_path),
           "FENLIU_STORE__URL": f"sqlite:///{tmp_path}/db/fenliu.db", "FENLIU_SIP__PORT": "0",
           "FENLIU_CONSOLE__PORT": "0"}
    r = run("doctor", env=env)
    assert r.returncode == 2  # port 0 is refused by the settings check
    env["FENLIU_SIP__PORT"] = "15999"
    env["FENLIU_CONSOLE__PORT"] = "18999"
    r = run("doctor", env=env)
    assert r.returncode == 1
    assert "✘ ASR model" in r.stdout and "fenliu model fetch small-cn" in r.stdout
    assert "✔ store" in r.stdout and "✔ negative list" in r.stdout
    r = run("doctor", "--model", "ko-test", env=env)
    assert "✔ ASR model (ko-test)" in r.stdout and "(loaded)" in r.stdout


def test_doctor_sees_a_busy_sip_port(tmp_path):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        env = {"FENLIU_SIP__PORT": str(port), "FENLIU_ASR__MODEL": "ko-test",
               "FENLIU_STORE__URL": f"sqlite:///{tmp_path}/fenliu.db", "FENLIU_CONSOLE__PORT": "18998"}
        r = run("doctor", "--no-load", env=env)
        assert r.returncode == 1
        assert f"✘ SIP port 127.0.0.1:{port}" in r.stdout and "sip.port" in r.stdout
    finally:
        s.close()


def test_bad_config_fails_at_start_with_the_key(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[router]\nrules_pth = 'x'\n", encoding="utf-8")
    r = run("--config", str(f), "classify", "停电")
    assert r.returncode == 2 and "router.rules_pth" in r.stderr and "rules_path" in r.stderr


def test_replay_realtime_paces_the_audio_like_a_live_call(tmp_path):
    import time

    wav = FIXTURES / "cmn" / "cmn-07-lockout.wav"
    from fenliu.asr.audio import read_wav

    duration = read_wav(wav).duration
    env = {"FENLIU_ASR__MODEL_DIR": str(tmp_path), "VOSK_MODEL_PATH": str(tmp_path)}
    start = time.monotonic()
    r = run("replay", str(wav), "--realtime", "--json", "--reference", "我出门忘带钥匙了 门打不开", env=env)
    wall = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    assert wall >= duration  # fed no faster than the audio plays
    last = [json.loads(x) for x in r.stdout.splitlines()][-1]
    assert last["type"] == "StreamEnded" and abs(last["t"] - duration) < 0.1


def test_a_corrupt_router_model_stops_start_up_and_doctor_names_the_fix(tmp_path):
    import shutil

    from fenliu.router.model import NPY_NAME, default_dir

    bad = tmp_path / "rm"
    shutil.copytree(default_dir(), bad)
    raw = bytearray((bad / NPY_NAME).read_bytes())
    raw[-3] ^= 0x55
    (bad / NPY_NAME).write_bytes(bytes(raw))
    env = {"FENLIU_ROUTER__MODEL": str(bad), "FENLIU_STORE__URL": f"sqlite:///{tmp_path}/fenliu.db",
           "FENLIU_SIP__PORT": "15997", "FENLIU_CONSOLE__PORT": "18997"}
    r = run("classify", "我们整栋楼从早上就停电了", env=env)
    assert r.returncode == 2 and "checksum" in r.stderr and "fenliu router-model build" in r.stderr
    assert r.stdout == ""
    r = run("doctor", "--no-load", env=env)
    assert r.returncode == 1
    assert "✘ router model" in r.stdout and "fenliu router-model build" in r.stdout
    r = run("router-model", "check", str(bad))
    assert r.returncode == 2 and "checksum" in r.stderr
    # the rules alone still work when a site chooses so
    r = run("classify", "我们整栋楼从早上就停电了", env={**env, "FENLIU_ROUTER__MODEL": "none"})
    assert r.returncode == 0 and json.loads(r.stdout)["model_version"] == ""


def test_router_model_check_describes_the_shipped_artefact():
    r = run("router-model", "check")
    assert r.returncode == 0, r.stderr
    assert "version rm-" in r.stdout and "held out" in r.stdout and "thresholds" in r.stdout
    d = json.loads(run("classify", "我们整栋楼从早上就停电了").stdout)
    assert d["model_version"].startswith("rm-")


def test_user_add_and_token_create_make_working_credentials(tmp_path):
    from fenliu.console.auth import Accounts
    from fenliu.store.record import Store

    env = {"FENLIU_STORE__URL": f"sqlite:///{tmp_path}/f.db"}
    r = run("user", "add", "zhang.san", "--role", "operator", "--seat", "seat07", "--password-stdin",
            stdin="a long enough password\n", env=env)
    assert r.returncode == 0 and "zhang.san" in r.stdout, r.stderr
    again = run("user", "add", "zhang.san", "--role", "admin", "--password-stdin", stdin="another password\n", env=env)
    assert again.returncode == 2 and "exists" in again.stderr
    short = run("user", "add", "li", "--role", "operator", "--password-stdin", stdin="short\n", env=env)
    assert short.returncode == 2 and "at least 8" in short.stderr
    tok = run("token", "create", "cti", "--user", "zhang.san", env=env)
    assert tok.returncode == 0 and tok.stdout.startswith("flt_")
    listed = run("user", "list", env=env)
    assert "zhang.san" in listed.stdout and "seat07" in listed.stdout
    store = Store(env["FENLIU_STORE__URL"])
    accounts = Accounts(store)
    user, _, _ = accounts.login("zhang.san", "a long enough password", "127.0.0.1")
    assert user.role == "operator" and user.seat == "seat07"
    assert accounts.token_user(tok.stdout.strip()).name == "zhang.san"
    store.close()
    revoked = run("token", "revoke", "cti", env=env)
    assert revoked.returncode == 0 and "1 token" in revoked.stdout
    store = Store(env["FENLIU_STORE__URL"])
    with pytest.raises(Exception, match="revoked"):
        Accounts(store).token_user(tok.stdout.strip())
    assert [a["action"] for a in store.audit_log()][:2] == ["token_revoke", "token_create"]
    store.close()


def test_user_role_disable_and_enable_change_the_account_and_end_its_sessions(tmp_path):
    from fenliu.console.auth import Accounts, AuthError
    from fenliu.store.record import Store

    env = {"FENLIU_STORE__URL": f"sqlite:///{tmp_path}/f.db"}
    assert run("user", "add", "wang", "--role", "operator", "--password-stdin", stdin="a long enough password\n",
               env=env).returncode == 0
    store = Store(env["FENLIU_STORE__URL"])
    _, sid, _ = Accounts(store).login("wang", "a long enough password", "127.0.0.1")
    r = run("user", "role", "wang", "supervisor", env=env)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AuthError):  # the session made for an operator has ended
        Accounts(store).session_user(sid)
    user, sid, _ = Accounts(store).login("wang", "a long enough password", "127.0.0.1")
    assert user.role == "supervisor"
    assert run("user", "disable", "wang", env=env).returncode == 0
    with pytest.raises(AuthError):
        Accounts(store).session_user(sid)
    with pytest.raises(AuthError, match="wrong"):
        Accounts(store).login("wang", "a long enough password", "127.0.0.1")
    assert "停用" in run("user", "list", env=env).stdout
    assert run("user", "enable", "wang", env=env).returncode == 0
    assert Accounts(store).login("wang", "a long enough password", "127.0.0.1")[0].role == "supervisor"
    nobody = run("user", "disable", "nobody", env=env)
    assert nobody.returncode == 2 and "no user" in nobody.stderr
    assert [a["action"] for a in store.audit_log()][:3] == ["user_enable", "user_disable", "user_role"]
    store.close()


def test_cli_without_a_token_says_where_one_comes_from(tmp_path):
    """`fenliu calls` against a running API without a token: 401 explained, not a traceback."""
    import asyncio
    import threading

    from aiohttp import web

    from tests.conftest import free_port

    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def deny(request):
        return web.json_response({"error": "请先登录 / log in first", "code": "unauthenticated"}, status=401)

    async def serve():
        app = web.Application()
        app.router.add_get("/api/calls", deny)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()

    threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True).start()
    ready.wait(10)
    r = run("calls", "--url", f"http://127.0.0.1:{port}", env={"FENLIU_STORE__URL": f"sqlite:///{tmp_path}/x.db",
                                                                "FENLIU_TOKEN": ""})
    loop.call_soon_threadsafe(loop.stop)
    assert r.returncode == 2 and "401" in r.stderr and ".token" in r.stderr and "token create" in r.stderr


def test_security_warnings_for_a_console_on_the_network():
    from dataclasses import replace

    from fenliu.console.server import security_warnings
    from fenliu.settings import Settings

    s = Settings()
    assert security_warnings(s) == []  # loopback: nothing to warn about
    lan = replace(s, console=replace(s.console, host="0.0.0.0"))
    w = security_warnings(lan)
    assert any("without TLS" in x for x in w) and any("public_host" in x for x in w)
    proxied = replace(s, console=replace(s.console, host="0.0.0.0", behind_proxy=True, public_host="110.example"))
    assert security_warnings(proxied) == []
