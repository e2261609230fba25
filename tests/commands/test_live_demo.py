"""The main job, `fenliu demo --live`: real calls into the SIP workers with the fixtures, the
one key, the front desk and the loop; and its end — Ctrl-C or SIGTERM in the middle of a call
stops it and every process it started (test hotlines, the stand-in ACD, callers, workers)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.commands.test_serve import settings_for
from tests.conftest import FIXTURES, ROOT, free_port

HOTLINES = ("12345", "12348", "12328", "12338", "95598", "social")


def fixtures(tmp_path: Path, ids: tuple[str, ...]) -> Path:
    folder = tmp_path / "fixtures"
    (folder / "cmn").mkdir(parents=True)
    rows = [json.loads(x) for x in (FIXTURES / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    pick = [r for r in rows if r["id"] in ids]
    for r in pick:
        shutil.copy(FIXTURES / r["file"], folder / r["file"])
    (folder / "manifest.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in pick),
                                           encoding="utf-8")
    return folder


def demo_env(tmp_path: Path) -> tuple[dict[str, str], list[int]]:
    """No Chinese model (reference transcripts), one worker, local test hotlines on free ports."""
    s = settings_for(1)
    ports = [free_port(2) for _ in HOTLINES]
    targets = ",".join(f"{t}=sip:{t}@127.0.0.1:{p}" for t, p in zip(HOTLINES, ports, strict=True))
    env = {**os.environ, "FENLIU_SIP__PORT": str(s.sip.port), "FENLIU_SIP__RTP_PORT": str(s.sip.rtp_port),
           "FENLIU_SIP__WORKERS": "1", "FENLIU_TRANSFER__TARGETS": targets,
           "FENLIU_ASR__MODEL_DIR": str(tmp_path), "VOSK_MODEL_PATH": str(tmp_path),
           "FENLIU_STORE__URL": f"sqlite:///{tmp_path}/fenliu.db", "FENLIU_CONSOLE__PORT": str(free_port())}
    return env, ports


def test_live_demo_dials_fixtures_and_presses_the_one_key(tmp_path):
    """The README's main job, on a machine with no Chinese model: real calls, reference
    transcripts, a diversion transferred to a local test hotline, a police call kept."""
    folder = fixtures(tmp_path, ("cmn-06-power", "cmn-11-knife"))
    env, _ = demo_env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "fenliu", "demo", "--live", "--fixtures", str(folder),
                        "--limit", "2", "--key-wait", "1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    assert "参考文本（非识别结果）" in out
    assert "接警台 console: http://127.0.0.1:" in out and "登录 login: demo / " in out
    assert "自动按键" in out  # nobody pressed the key: the demo did
    power = next(line for line in out.splitlines() if line.startswith("cmn-06-power"))
    assert "95598" in power and "transfer_completed" in power
    knife = next(line for line in out.splitlines() if line.startswith("cmn-11-knife"))
    assert "police" in knife and knife.rstrip().endswith("-")  # kept with 110: no transfer pressed
    # the loop, against the demo's stand-in platform: one order (the power cut), delivered,
    # reported 办结 through the signed webhook, the caller asked and answering 1
    assert "模拟12345平台收到工单" in out and "平台回报" in out and "办结" in out
    # the voice front desk: the same two callers dialled to its number — the power cut offered and
    # transferred on the caller's key 1, the knife call handed to the operators' queue, urgent
    ivr_power = next(line for line in out.splitlines() if line.startswith("cmn-06-power (IVR)"))
    assert "95598" in ivr_power and ivr_power.rstrip().endswith("IVR transferred")
    ivr_knife = next(line for line in out.splitlines() if line.startswith("cmn-11-knife (IVR)"))
    assert ivr_knife.rstrip().endswith("IVR queued urgent")
    assert "语音前台 welcome: barge_in 来电人开口说话" in out and "来电人听完提示后按 1" in out
    summary = out[out.index("工单 work orders:"):]
    assert summary.startswith("工单 work orders: 2")  # the operator's diversion and the front desk's
    assert "→ 95598 completed (平台 YC12345-" in summary and "短信 sent/sent" in summary and "热线评价 1" in summary


# -- stopping the demo mid-call -------------------------------------------------------------------


def descendants(pid: int) -> dict[int, str]:
    """Every living process below ``pid`` (by parent links in /proc), with its command line."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out[p] = cmdline(p)
        todo.extend(children.get(p, []))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running or stopped, not a zombie waiting for a reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Demo:
    """`fenliu demo --live` in its own session (as from a terminal), its output read as it comes."""

    def __init__(self, tmp_path: Path) -> None:
        folder = fixtures(tmp_path, ("cmn-06-power", "cmn-02-wage"))
        env, self.hotline_ports = demo_env(tmp_path)
        self.proc = subprocess.Popen([sys.executable, "-m", "fenliu", "demo", "--live", "--fixtures", str(folder),
                                      "--limit", "2", "--key-wait", "30"],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()

    def wait_for(self, text: str, timeout: float = 90) -> None:
        with self.cv:
            if not self.cv.wait_for(lambda: any(text in x for x in self.lines) or self.proc.poll() is not None,
                                    timeout):
                raise TimeoutError(f"the demo never printed {text!r}: {''.join(self.lines)[-2000:]}")
        assert any(text in x for x in self.lines), f"the demo ended before {text!r}: {''.join(self.lines)[-2000:]}"

    def stop_in_call(self, send_signal) -> tuple[float, dict[int, str]]:
        """Wait until the first call is up and its caller is speaking, signal, and wait for the
        demo's end; returns the seconds it took and the processes it had started."""
        self.wait_for("通话中")  # the caller's media is up: a call is in progress
        self.wait_for("参考文本")  # … and the service is hearing it
        started = descendants(self.proc.pid)
        assert any("fenliu.sip.ua.peer" in c for c in started.values())  # hotlines, caller
        assert any("fenliu.sip.ua.worker" in c for c in started.values())
        t0 = time.monotonic()
        send_signal()
        rc = self.proc.wait(60)
        took = time.monotonic() - t0
        return took, started | {0: f"rc={rc}"}

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def assert_nothing_left(started: dict[int, str], ports: list[int]) -> None:
    left = {p: c for p, c in started.items() if p and alive(p)}
    assert not left, f"processes left behind: {left}"
    assert all(udp_port_free(p) for p in ports), "a test hotline's SIP port is still held"


def test_ctrl_c_during_a_call_ends_the_demo_and_everything_it_started(tmp_path):
    demo = Demo(tmp_path)
    try:
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group
        took, started = demo.stop_in_call(lambda: os.killpg(demo.proc.pid, signal.SIGINT))
    finally:
        demo.kill()
    print(f"Ctrl-C → demo ended in {took:.2f} s")
    assert started[0] == "rc=130", "".join(demo.lines)[-2000:]
    assert "已中断 / interrupted" in "".join(demo.lines)
    assert_nothing_left(started, demo.hotline_ports)


def test_sigterm_during_a_call_leaves_no_hotline_or_peer_behind(tmp_path):
    demo = Demo(tmp_path)
    try:
        # a service manager's stop: SIGTERM to the demo's process alone
        took, started = demo.stop_in_call(lambda: demo.proc.send_signal(signal.SIGTERM))
    finally:
        demo.kill()
    print(f"SIGTERM → demo ended in {took:.2f} s")
    assert started[0] == "rc=143", "".join(demo.lines)[-2000:]
    assert_nothing_left(started, demo.hotline_ports)
