"""A single trunk address in front of the SIP workers: Kamailio's ``dispatcher`` module.

One pjsua2 endpoint holds four calls, so a PBX that can only point at one address needs a
dispatcher: new INVITEs go round-robin over the workers, and a worker that answers
486/503/408/480/500 (full, or failing) is skipped for the next one. The configuration is
generated from settings, Kamailio (Debian package ``kamailio``) is started in the foreground as a
child and stopped with the supervisor. Media goes straight between the PBX and the worker (SDP
is not touched), and no Record-Route is added: only the INVITE passes the front.

Fail-open (``fallback_uri``): fenliu sits in the path of 110 calls, so when no worker can take
a call — all dead, all full, or all failing — the INVITE goes straight to the operators (an
operator seat or the ACD queue) with ``X-Fenliu-Failopen: workers unavailable``, and fenliu is out
of that call's path. Dead workers are found two ways: a new INVITE that gets no reply at all
within ``fr_timer_ms`` (UDP gives no error when a process is gone) marks that worker inactive at
once, and the dispatcher sends OPTIONS to every worker each ``ping_interval`` seconds (pjsua2
answers 200 by itself), marking silent ones inactive and bringing them back on the first 200.
Without a fallback, a call no worker takes gets 503 (or the last worker's answer), as before.

Every state change is written as one ``fenliu-front:`` line on Kamailio's stderr, which
:class:`KamailioFront` keeps (``lines``, ``wait_log``) and can pass on (``on_line``).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from fenliu.errors import FenliuError
from fenliu.sip.protocol import RELAYED_HEADER

MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/aarch64-linux-gnu/kamailio/modules",
               "/usr/lib/kamailio/modules", "/usr/local/lib64/kamailio/modules")
FAILOPEN_HEADER = "X-Fenliu-Failopen"
LOG_TAG = "fenliu-front:"
# a SIP URI that is safe to paste into a Kamailio string literal
_SAFE_URI = re.compile(r"^sips?:[A-Za-z0-9_.!~*'()%&=+,;?/:@\[\]-]+$")  # no $ (PVs), quotes or spaces


def _udp_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def module_dir() -> str:
    for d in MODULE_DIRS:
        if Path(d, "dispatcher.so").exists():
            return d
    raise FenliuError("找不到 Kamailio 的 dispatcher 模块 / Kamailio modules not found; apt-get install kamailio")


def check_fallback(uri: str) -> str:
    """``uri`` if it can be a fail-open target ("" = none); raises FenliuError otherwise."""
    if uri and not _SAFE_URI.match(uri):
        raise FenliuError(f"fail-open 目标无效 / bad fallback URI {uri!r}: use a SIP URI such as "
                          "sip:acd@pbx.example:5060 (the operator seat or ACD queue)")
    return uri


DS_SET = {"udp": 1, "tcp": 2, "tls": 3}  # one dispatcher set per transport: a call goes on as it came in


def render_config(address: str, port: int, list_file: str, modules: str, fallback_uri: str = "",
                  ping_interval: int = 1, fr_timer_ms: int = 1500, fr_inv_timer_ms: int = 30000,
                  fallback_ring_ms: int = 120000, transports: tuple[str, ...] = ("udp",), tls_port: int = 0,
                  tls_config: str = "") -> str:
    """The Kamailio configuration.

    ``fr_timer_ms``: a worker that sends nothing (not even 100 Trying, which pjsua2 sends at
    once) within this time is taken as dead; ``fr_inv_timer_ms``: how long a worker's call may
    ring (B2BUA seat mode) before the front gives up; ``fallback_ring_ms``: the same for the
    fail-open target, which is a person's phone or a queue. ``transports``: the front listens on
    UDP, and on TCP (same port) and TLS (``tls_port``, ``tls_config`` names the TLS module's file)
    when asked; an INVITE goes on to a worker over the transport it came in on (the workers
    listen on the same ones), so a TLS trunk stays TLS up to the worker that keeps the dialog."""
    check_fallback(fallback_uri)
    listens = f"listen=udp:{address}:{port}"
    tls_modules = ""
    if "tcp" in transports:
        listens += f"\nlisten=tcp:{address}:{port}"
    if "tls" in transports:
        listens += f"\nenable_tls=yes\nlisten=tls:{address}:{tls_port}"
        tls_modules = f'loadmodule "tls.so"\nmodparam("tls", "config", "{tls_config}")\n'
    if "tcp" not in transports and "tls" not in transports:
        listens += "\ndisable_tcp=yes"
    if fallback_uri:
        no_worker = 'route(FAILOPEN);'
        all_failed = '$var(why) = "every worker failed, last " + $T_reply_code;\n    route(FAILOPEN);'
        failopen = f"""
route[FAILOPEN] {{
    # fenliu out of the path: straight to the operators
    xlog("L_NOTICE", "{LOG_TAG} failopen $ci -> {fallback_uri} ($var(why))\\n");
    $ru = "{fallback_uri}";
    $du = $null;
    append_hf("{FAILOPEN_HEADER}: workers unavailable\\r\\n");
    t_set_fr({fallback_ring_ms}, 5000);
    t_relay();
    exit;
}}
"""
    else:  # no fail-open target (sip.fallback_uri): the PBX gets the answer, as before fail-open
        no_worker = ('xlog("L_NOTICE", "' + LOG_TAG + ' no-worker $ci ($var(why)), no fallback\\n");\n'
                     '        sl_send_reply("503", "No fenliu worker available");\n        exit;')
        all_failed = ('xlog("L_NOTICE", "' + LOG_TAG + ' no-worker $ci (every worker failed), no fallback\\n");'
                      '\n    exit;')
        failopen = ""
    return f"""#!KAMAILIO
# generated by fenliu: single trunk address -> SIP workers (dispatcher, round-robin + failover,
# OPTIONS probing{", fail-open to " + fallback_uri if fallback_uri else ""})
debug=1
log_stderror=yes
fork=yes
children=2
auto_aliases=no
{listens}
mpath="{modules}"

loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "dispatcher.so"
{tls_modules}
modparam("dispatcher", "list_file", "{list_file}")
modparam("dispatcher", "flags", 2)                 # failover: keep the other workers for ds_next_dst
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:fenliu-front@{address}")
modparam("dispatcher", "ds_ping_interval", {ping_interval})
modparam("dispatcher", "ds_probing_mode", 1)       # probe every worker, not only the ones marked down
modparam("dispatcher", "ds_probing_threshold", 2)  # two missed probes: inactive (a silent INVITE: at once)
modparam("dispatcher", "ds_inactive_threshold", 1) # one 200 to OPTIONS: active again
modparam("tm", "fr_timer", {fr_timer_ms})          # no reply at all within this: the worker is gone
modparam("tm", "fr_inv_timer", {fr_inv_timer_ms})  # ringing (after a provisional reply)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        # in-dialog requests that still reach us (a PBX that sends everything to its trunk
        # address) go on to the worker named in the request URI
        loose_route();
        if (is_method("ACK") && !t_check_trans()) {{
            forward();
            exit;
        }}
        t_set_fr(0, 8000);
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("OPTIONS")) {{
        # the PBX's trunk keep-alive: the front is up (and routes calls even with no worker)
        sl_send_reply("200", "OK");
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    # no record_route(): only the INVITE passes here; the dialog then runs directly between
    # the PBX and the worker (the front is not a single point of failure for live calls)
    $var(set) = 1;  # the workers over the transport the call came in on
    if ($pr == "tcp") {{
        $var(set) = 2;
    }} else if ($pr == "tls") {{
        $var(set) = 3;
    }}
    if (!ds_select_dst("$var(set)", "4")) {{
        $var(why) = "no worker active";
        {no_worker}
    }}
    append_hf("{RELAYED_HEADER}: $TV(Sn)\r\n");
    t_on_failure("NEXT_WORKER");
    t_relay();
    exit;
}}

failure_route[NEXT_WORKER] {{
    if (t_is_canceled()) {{
        exit;
    }}
    if (t_branch_timeout()) {{
        if (t_branch_replied()) {{
            exit;  # it rang (B2BUA seat mode) and nobody answered: not a worker failure
        }}
        # not even 100 Trying (pjsua2 sends it at once): the worker is dead, and UDP tells us
        # nothing; skip it until it answers an OPTIONS probe again
        xlog("L_NOTICE", "{LOG_TAG} worker-silent $du\\n");
        ds_mark_dst("ip");
    }} else if (!t_check_status("486|503|408|480|500")) {{
        exit;  # a real answer (404, 403, 603 …) goes back to the PBX
    }}
    if (ds_next_dst()) {{
        append_hf("{RELAYED_HEADER}: $TV(Sn)\r\n");  # this branch's own time (the worker takes the latest)
        t_on_failure("NEXT_WORKER");
        t_relay();
        exit;
    }}
    {all_failed}
}}
{failopen}
route[DST] {{
    # the worker concerned: $du when a call marked it, the request URI when a probe did
    if ($du != $null) {{
        $var(dst) = $du;
    }} else {{
        $var(dst) = $ru;
    }}
}}

event_route[dispatcher:dst-down] {{
    route(DST);
    xlog("L_NOTICE", "{LOG_TAG} worker-down $var(dst)\\n");
}}

event_route[dispatcher:dst-up] {{
    route(DST);
    xlog("L_NOTICE", "{LOG_TAG} worker-up $var(dst)\\n");
}}
"""


class KamailioFront:
    """Kamailio as a child process in front of ``workers`` [(host, port)].

    ``fallback_uri``: fail-open target (empty: 503 when no worker can take a call);
    ``on_line``: called with each ``fenliu-front:`` line (worker-down/up, failopen …)."""

    def __init__(self, address: str, port: int, workers: list[tuple[str, int]], fallback_uri: str = "",
                 ping_interval: int = 1, fr_timer_ms: int = 1500,
                 on_line: Callable[[str], None] | None = None, transports: tuple[str, ...] = ("udp",),
                 tls_port: int = 0, tls_cert: str = "", tls_key: str = "",
                 worker_tls_ports: list[int] | None = None) -> None:
        """``worker_tls_ports``: each worker's TLS port, in the order of ``workers`` (with "tls")."""
        self.address, self.port, self.workers = address, port, workers
        self.transports, self.tls_port, self.tls_cert, self.tls_key = transports, tls_port, tls_cert, tls_key
        self.worker_tls_ports = worker_tls_ports or []
        if "tls" in transports and (not tls_port or len(self.worker_tls_ports) != len(workers)):
            raise FenliuError("Kamailio front: TLS needs the front's TLS port and each worker's TLS port")
        self.fallback_uri = check_fallback(fallback_uri)
        self.ping_interval, self.fr_timer_ms = ping_interval, fr_timer_ms
        self.on_line = on_line
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: deque[tuple[int, str]] = deque(maxlen=5000)
        self._count = 0
        self._tail: deque[str] = deque(maxlen=40)  # everything Kamailio said, for errors
        self._cv = threading.Condition()

    def config(self, list_file: str, modules: str, tls_config: str = "") -> str:
        return render_config(self.address, self.port, list_file, modules, self.fallback_uri,
                             self.ping_interval, self.fr_timer_ms, transports=self.transports,
                             tls_port=self.tls_port, tls_config=tls_config)

    def dispatcher_list(self) -> str:
        """Set 1: the workers over UDP; 2: over TCP (the same ports); 3: over TLS (flags 8: probed
        with OPTIONS from the start)."""
        lines = [f"1 sip:{h}:{p} 8\n" for h, p in self.workers]
        if "tcp" in self.transports:
            lines += [f"2 sip:{h}:{p};transport=tcp 8\n" for h, p in self.workers]
        if "tls" in self.transports:
            lines += [f"3 sip:{h}:{tp};transport=tls 8\n" for (h, _), tp in zip(self.workers, self.worker_tls_ports,
                                                                                   strict=True)]
        return "".join(lines)

    def tls_file(self) -> str:
        """The TLS module's configuration: the front's certificate for the PBX, no client
        certificate asked (the trunk is authenticated by sip.allow / the PBX's own policy)."""
        return (f"[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
                f"private_key = {self.tls_key}\ncertificate = {self.tls_cert}\n\n"
                f"[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        if not Path(binary).exists():
            raise FenliuError("没有安装 Kamailio / kamailio not installed: apt-get install kamailio "
                              "(or set sip.front_port = 0 and point the PBX at each worker)")
        if not self.workers:
            raise FenliuError("Kamailio front: no worker addresses given")
        if not _udp_free(self.address, self.port):  # else "port taken" below would mean nothing
            raise FenliuError(f"Kamailio front: udp {self.address}:{self.port} is already in use "
                              "(another front, or the system kamailio service: systemctl disable --now kamailio)")
        self._dir = tempfile.TemporaryDirectory(prefix="fenliu-kamailio-")
        d = Path(self._dir.name)
        dlist = d / "dispatcher.list"
        dlist.write_text(self.dispatcher_list(), encoding="utf-8")
        tls_cfg = ""
        if "tls" in self.transports:
            tls_cfg = str(d / "tls.cfg")
            Path(tls_cfg).write_text(self.tls_file(), encoding="utf-8")
        cfg = d / "kamailio.cfg"
        cfg.write_text(self.config(str(dlist), module_dir(), tls_cfg), encoding="utf-8")
        check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise FenliuError(f"Kamailio 配置无效 / generated Kamailio config rejected: {check.stderr[-800:]}")
        self.proc = subprocess.Popen([binary, "-DD", "-E", "-f", str(cfg), "-w", str(d), "-P", str(d / "pid"),
                                      "-Y", str(d)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        # drain stderr for the whole run: a full pipe would block Kamailio's logging, and the
        # fenliu-front lines are the facts tests and operators wait on
        threading.Thread(target=self._read_stderr, name="kamailio-stderr", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # ready when the port is taken
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader take the last lines
                raise FenliuError(f"Kamailio exited at start ({self.proc.returncode}): {self.stderr_tail()[-800:]}")
            if not _udp_free(self.address, self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise FenliuError(f"Kamailio did not start listening on {self.address}:{self.port} in {timeout:.0f} s")

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._tail.append(line)
            at = line.find(LOG_TAG)
            if at < 0:
                continue
            fact = line[at + len(LOG_TAG):].strip()
            with self._cv:
                self._lines.append((self._count, fact))
                self._count += 1
                self._cv.notify_all()
            if self.on_line is not None:
                try:
                    self.on_line(fact)
                except Exception:  # a broken listener must not stop the draining
                    pass

    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    def mark(self) -> int:
        """The number the next front line will get (``wait_log(..., since=mark)``)."""
        with self._cv:
            return self._count

    def lines(self, since: int = 0) -> list[str]:
        """The ``fenliu-front:`` facts so far: "worker-down sip:h:p", "failopen CALLID -> URI (why)" …"""
        with self._cv:
            return [f for n, f in self._lines if n >= since]

    def wait_log(self, pred: Callable[[str], bool], timeout: float = 10.0, since: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for n, f in self._lines:
                    if n >= since and pred(f):
                        return f
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"Kamailio front: no matching line within {timeout} s; "
                                       f"seen {[f for _, f in self._lines][-6:]}")
                self._cv.wait(left)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def parse_workers(spec: str) -> list[tuple[str, int]]:
    """Worker SIP addresses for ``fenliu front --instances``: a comma list of ``host:port`` or
    ``host:first-last`` (one fenliu instance's workers listen on sip.port .. sip.port+workers-1)."""
    out: list[tuple[str, int]] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        host, _, ports = item.rpartition(":")
        try:
            first, _, last = ports.partition("-")
            lo, hi = int(first), int(last or first)
        except ValueError:
            lo = hi = 0
        if not host or not 0 < lo <= hi < 65536 or hi - lo > 64:
            raise FenliuError(f"工作进程地址无效 / bad worker address {item!r}: use host:port or host:first-last, "
                              "e.g. 10.0.0.11:5060-5061,10.0.0.12:5060-5061")
        out += [(host, p) for p in range(lo, hi + 1)]
    if not out:
        raise FenliuError("没有工作进程地址 / no worker addresses: --instances host:port[-last],…")
    return out


def run_front(address: str, port: int, workers: list[tuple[str, int]], fallback_uri: str,
              out: Callable[[str], None], timeout: float = 1.5) -> int:
    """``fenliu front``: Kamailio alone in front of workers anywhere (one or more fenliu
    instances); runs until SIGTERM/SIGINT or until Kamailio dies (exit 1)."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    front = KamailioFront(address, port, workers, fallback_uri, fr_timer_ms=int(timeout * 1000),
                          on_line=lambda line: out(f"front: {line}"))
    try:
        front.start()
        target = fallback_uri or "503 (no fallback: set --fallback or sip.fallback_uri)"
        out(f"fenliu front: udp:{address}:{port} -> {len(workers)} worker(s) "
            f"{', '.join(f'{h}:{p}' for h, p in workers)}; when none can take a call: {target}")
        while not stop.wait(0.5):
            if front.proc is not None and front.proc.poll() is not None:
                out(f"fenliu front: Kamailio exited ({front.proc.returncode}): {front.stderr_tail()[-800:]}")
                return 1
        return 0
    finally:
        front.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        out("fenliu front: stopped")
