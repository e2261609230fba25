"""One typed settings object: defaults, then a TOML file, then FENLIU_SECTION__KEY
environment variables. Unknown keys and bad values fail at start-up naming the key and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

from fenliu.errors import ConfigError

ENV_PREFIX = "FENLIU_"


@dataclass(frozen=True)
class AsrSettings:
    engine: str = "vosk"
    model: str = "vosk-model-small-cn-0.22"  # a path, a Vosk model name, or "ko-test"
    model_dir: str = ""  # where named models are looked for / fetched into (default ~/.cache/vosk)
    sample_rate: int = 16000
    partial_every_ms: int = 200  # how often to ask the recogniser for a partial transcript
    mode: str = "threads"  # "threads": one recognition thread per leg in the supervisor, one shared model and
    # warm recogniser pool (measured best on 2 cores, see README); "processes": ASR processes fed straight by
    # the SIP workers (isolation: a crash in the recogniser cannot take the supervisor down; a model per process)
    processes: int = 0  # ASR processes (0: one per CPU core)
    streams_per_process: int = 8  # legs one ASR process recognises; beyond: the call is marked "no live suggestion"
    max_delay: float = 3.0  # a leg whose recognition falls this many seconds behind the call is marked degraded
    max_active: int = 0  # decoder search width (the model's --max-active); 0: the model's own (3000 for the small models)
    beam: float = 0.0  # decoder beam (the model's --beam); 0: the model's own (10). Narrower = less CPU, less accurate
    warm_streams: int = 0  # recognisers prepared at start-up, in the background (0: as many legs as the workers
    # admit); a cold recogniser costs ~1 s of CPU on its first speech, so each new call would stall


@dataclass(frozen=True)
class VadSettings:
    enabled: bool = True
    aggressiveness: int = 2
    energy_floor_dbfs: float = -50.0
    frame_ms: int = 20
    min_speech_ms: int = 200
    start_window_ms: int = 300
    stop_ms: int = 600
    padding_ms: int = 300
    max_utterance_ms: int = 15000


@dataclass(frozen=True)
class RouterSettings:
    rules_path: str = ""  # empty: the negative list shipped with fenliu
    model: str = "default"  # learned layer: "default" (shipped artefact), "none" (rules alone), or a folder
    switch_margin: float = 1.0


@dataclass(frozen=True)
class SipSettings:
    address: str = "127.0.0.1"
    port: int = 5060  # worker i listens on port + i
    workers: int = 2
    rtp_port: int = 40000  # worker i uses rtp_port + i * rtp_range …
    rtp_range: int = 40
    seat_uri: str = ""  # B2BUA seat mode: every call is bridged to this operator seat (empty: answer)
    # which seat answered (an ACD's agent) comes from the operator leg's 2xx: this header if set, else
    # P-Asserted-Identity, Contact, To — it is matched to console users' seats (fenliu user add --seat)
    seat_header: str = ""
    # or the seats fenliu rings itself (no ACD): SIP URIs, comma-separated; each call rings the free seat
    # idle longest ("longest-idle") or the next in turn ("round-robin"), then the next after seat_ring s
    seats: str = ""
    seat_strategy: str = "longest-idle"
    seat_ring: float = 15.0
    # SIGTERM / `fenliu drain`: new calls are refused (503: the front tries another instance) and the live
    # ones end by themselves; a centre that wants a bound sets it (s), the calls cut then go on the callback list
    drain_timeout: float = 0.0
    users: str = "110"  # numbers (request-URI users) this service takes, comma separated; * = any
    media_timeout: float = 10.0  # no RTP from the caller for N s (not on hold): an in-dialog OPTIONS asks whether
    # anybody is there; only no answer ends the call (a call with no audio at all ends after N s)
    max_duration: float = 7200.0  # end any call after this many seconds (0: no limit)
    max_hold: float = 0.0  # end a call whose caller is on hold longer than N s (0: never; silence on hold is normal)
    reserve_transfer_leg: bool = True  # admit only as many calls per worker as leave a SIP leg for each transfer
    session_expires: int = 1800  # SIP session timer (RFC 4028), used when the peer supports it
    allow: str = ""  # static-peer mode: comma list of PBX addresses allowed to send calls (empty = any)
    front_port: int = 0  # single trunk address: Kamailio dispatcher on this port in front of the workers (0: none)
    # fail-open (with front_port): when no worker can take a call (all down, full or failing) the front
    # sends it straight to this operator seat / ACD queue, marked "X-Fenliu-Failopen" (empty: 503)
    fallback_uri: str = ""
    transports: tuple[str, ...] = ("udp",)  # "udp", "tcp" (on the same ports), "tls" (on tls_port + i)
    tls_port: int = 0  # worker i takes TLS on tls_port + i (0: right after the workers' ports, port + workers + i)
    tls_cert: str = ""  # PEM certificate (chain) the workers and the front serve TLS with
    tls_key: str = ""  # PEM private key of tls_cert (keep it readable by fenliu only)
    front_tls_port: int = 0  # the front's TLS port with "tls" and front_port (0: front_port + 1)
    # how long the front waits for a worker's first reply before it tries the next one (or fails open);
    # a worker refuses an INVITE the front relayed longer ago than this (it was failed over meanwhile)
    front_timeout: float = 1.5
    registrar: str = ""  # trunk registration: sip:pbx.example:5060 (empty: static peer, no REGISTER)
    reg_user: str = ""  # per worker; "{i}" becomes the worker number: "fenliu{i}" -> fenliu0, fenliu1, …
    reg_password: str = ""  # set it with FENLIU_SIP__REG_PASSWORD, never in a committed file
    reg_expires: int = 300
    reg_retry: int = 30


def _default_targets() -> dict[str, str]:
    # local test hotlines, started by the demo; a deployment points these at its PBX
    return {"12345": "sip:12345@127.0.0.1:5091", "12348": "sip:12348@127.0.0.1:5092",
            "12328": "sip:12328@127.0.0.1:5093", "12338": "sip:12338@127.0.0.1:5094",
            "95598": "sip:95598@127.0.0.1:5095", "social": "sip:social@127.0.0.1:5096",
            # the urgent lane: services the operator brings into the call (three-way) with one key
            "119": "sip:119@127.0.0.1:5097", "120": "sip:120@127.0.0.1:5098", "122": "sip:122@127.0.0.1:5099",
            "fraud": "sip:96110@127.0.0.1:5100"}


def _default_names() -> dict[str, str]:
    # how each target is shown and said — the console's keys and cards, the IVR's offers, the SMS
    # texts: "<number> <name>" (the number may be left out, e.g. social services have none)
    return {"12345": "12345 政务服务便民热线", "12348": "12348 公共法律服务热线",
            "12328": "12328 交通运输服务监督热线", "12338": "12338 妇女维权公益服务热线",
            "95598": "95598 供电服务热线", "social": "社会联动服务",
            "119": "119 消防救援", "120": "120 医疗急救", "122": "122 交通事故报警", "fraud": "96110 反诈中心"}


def _default_links() -> dict[str, str]:
    # which urgent service a danger card offers, by danger group of the negative list
    return {"fire": "119", "person_at_risk": "120", "suicide": "120", "traffic_accident": "122",
            "drunk_driving": "122", "fraud": "fraud"}


def target_label(settings_or_names: TransferSettings | dict[str, str], tid: str) -> tuple[str, str]:
    """A target's (number, name) from [transfer.names] (the shipped names where it has none):
    "12345 政务服务便民热线" → ("12345", "政务服务便民热线"); "社会联动服务" → ("", "社会联动服务");
    a target named nowhere: its id as the number if it is one ("12399" → ("12399", "")), else no
    number and the id as its name."""
    names = settings_or_names.names if isinstance(settings_or_names, TransferSettings) else settings_or_names
    # a configuration's [transfer.names] names what it wants; the shipped names fill in the rest
    label = (names.get(tid) or _default_names().get(tid) or "").strip()
    if not label:
        return (tid, "") if tid.isdigit() else ("", tid)
    head, _, rest = label.partition(" ")
    if head.isdigit() and rest.strip():
        return head, rest.strip()
    number = re.match(r"\d{3,}", label)
    if number and label[number.end():].strip():
        return number.group(0), label[number.end():].strip()
    return ("", label)


@dataclass(frozen=True)
class TransferSettings:
    mode: str = "three-way"  # or "refer"
    answer_timeout: float = 20.0  # hotline must answer (or the REFER complete) within this
    drop_operator_after: float = 0.0  # three-way: leave automatically after N s (0 = on the operator's word)
    min_talk: float = 3.0  # a hotline that hangs up within N s of answering has not taken the caller: failed
    # a key that waited longer than this before the service could run it (its loop was held up) is refused and
    # the operator told, never executed late (the caller's situation may have changed meanwhile)
    max_command_age: float = 3.0
    targets: dict[str, str] = field(default_factory=_default_targets)
    urgent: str = "119,120,122,fraud"  # the console's urgent lane (comma separated target ids; those without a
    # URI in [transfer.targets] are not shown)
    links: dict[str, str] = field(default_factory=_default_links)  # danger group id -> urgent target id
    names: dict[str, str] = field(default_factory=_default_names)  # target id -> "<number> <name>" (target_label)
    # a caller goes only to configured targets (by id); a deployment may let a role transfer to raw SIP
    # addresses matching these patterns (comma separated, shell-style: "sip:*@10.20.*"); empty: never
    allow_uris: str = ""
    allow_uris_role: str = "supervisor"  # the least role that may (operator, supervisor, admin)


@dataclass(frozen=True)
class StoreSettings:
    url: str = "sqlite:///var/fenliu.db"  # or postgresql://USER@HOST:PORT/DB (shared by several instances)
    timezone: str = "Asia/Shanghai"  # the calendar of daily figures
    transcript_days: int = 0  # blank transcripts (text, finals) of calls older than this (0: keep)
    recording_days: int = 0  # delete recordings in recordings_dir older than this (0: keep)
    recordings_dir: str = ""
    instance: str = ""  # this instance's name on its rows (calls, work orders); "" = host:console port
    # one live view over every instance on the store (calls, events, keys carried between instances):
    # "auto" = on for PostgreSQL, "on", "off"
    centre: str = "auto"
    centre_keep_hours: float = 24.0  # how long the shared event stream is kept (for ?since= resumes)


def instance_name(settings: Settings) -> str:
    """The name this instance writes on the store's rows: store.instance, else host:console port."""
    return settings.store.instance or f"{socket.gethostname()}:{settings.console.port}"


@dataclass(frozen=True)
class PlatformSettings:
    """One hotline platform receiving work orders (each city's 12345 differs: map the fields)."""

    url: str = ""  # POST endpoint for a work order (JSON); empty: orders are kept for hand-over only
    name: str = ""
    # the target ids whose orders this platform takes (comma separated), besides a target named like the
    # platform ([platforms.12348] takes 12348's); a target no platform takes keeps its orders local (待人工转交)
    targets: str = "12345"
    timeout: float = 10.0
    ca: str = ""  # PEM CA of the platform or its security-boundary gateway (empty: system CAs)
    client_cert: str = ""  # PEM client certificate and key when the gateway asks for one
    client_key: str = ""
    secret_env: str = ""  # environment variable holding the shared HMAC secret (signs orders, checks webhooks)
    deadline_hours: float = 72.0  # an order not completed (办结) by then raises a flow-back alert
    ref_field: str = "order_no"  # the field of the platform's answer holding its own order number
    fields: dict[str, str] = field(default_factory=dict)  # platform field -> template of fenliu fields; empty: as is
    headers: dict[str, str] = field(default_factory=dict)  # extra request headers (e.g. an app id)
    status_map: dict[str, str] = field(default_factory=dict)  # platform status word -> accepted/dispatched/…


@dataclass(frozen=True)
class SiteSettings:
    """One 110 site (e.g. a county) with its own hotline platform and targets, chosen by the
    call's called number or trunk."""

    name: str = ""
    numbers: str = "*"  # called numbers (request-URI user) of this site, comma separated; * = any
    trunks: str = ""  # hosts of the caller's From URI (the PBX trunk), comma separated; empty = any
    targets: dict[str, str] = field(default_factory=dict)  # target id -> SIP URI, over [transfer.targets]
    platforms: dict[str, str] = field(default_factory=dict)  # target id -> platform id; "*" for the rest


@dataclass(frozen=True)
class SmsSettings:
    url: str = ""  # SMS gateway: POST JSON {to, text, ...}; empty: messages are recorded as not sent
    enabled: bool = True
    sender: str = ""
    timeout: float = 10.0
    secret_env: str = ""  # environment variable with the HMAC secret (signs requests, checks reply webhooks)
    templates: str = ""  # TOML file of message templates (empty: the shipped Chinese ones)
    per_number_per_day: int = 3  # at most this many messages to one number in 24 h
    followup: bool = True  # when the hotline reports 办结, ask the caller about the result


@dataclass(frozen=True)
class OutboxSettings:
    retry_base: float = 2.0  # first retry after ~this many seconds, doubling (with jitter)
    retry_max: float = 300.0  # longest wait between two tries
    stuck_minutes: float = 15.0  # an undelivered order older than this raises an alert (it keeps trying)
    poll_seconds: float = 1.0  # how often the outbox looks for due items (other instances' too)
    lease_seconds: float = 60.0  # a claimed item is retried by another instance after this


@dataclass(frozen=True)
class FollowupSettings:
    window_days: float = 7.0  # the flow-back window: a repeat call about the same matter is flagged
    cluster_days: float = 30.0  # leads: similar complaints from different numbers within this window
    cluster_min_numbers: int = 3  # … from at least this many numbers


@dataclass(frozen=True)
class ConsoleSettings:
    host: str = "127.0.0.1"  # a non-loopback address needs TLS (tls_cert) or a TLS reverse proxy (behind_proxy)
    port: int = 8110
    public_host: str = ""  # names browsers use to reach the console (comma separated), besides localhost
    tls_cert: str = ""  # PEM certificate and key: serve HTTPS (cookies then carry Secure)
    tls_key: str = ""
    behind_proxy: bool = False  # a TLS reverse proxy in front: cookies carry Secure, no start-up warning
    session_idle_minutes: float = 480.0  # a console session ends after this long without a request
    event_buffer: int = 10000  # events kept for clients that reconnect (?since=)
    metrics_token: str = ""  # /metrics: loopback clients only, or this bearer token (set it via environment)
    max_body_kb: int = 256  # larger request bodies are refused (413)
    max_streams_per_session: int = 4  # open event streams (console tabs, API readers) per session or token
    header_timeout: float = 10.0  # a client must send a request's headers within this many seconds (slowloris)


@dataclass(frozen=True)
class IvrSettings:
    """The voice front (docs/flows.md): which flow, when it runs, where it hands callers over."""

    flow: str = ""  # "" = no IVR; "front_desk" = the shipped overflow front desk; or a flow file's path
    when: str = "overflow"  # "overflow": when the seat is busy / does not answer (seat mode) and for calls to
    # `numbers` (the PBX's overflow destination); "always": every call starts in the flow
    numbers: str = ""  # called numbers (request-URI users) that always start in the flow, comma separated
    queue_uri: str = ""  # the operators' queue (PBX ACD, or a seat) the flow hands callers to; default: sip.seat_uri
    queue_timeout: float = 30.0  # a queue that does not answer in this many seconds is dialled again
    seat_timeout: float = 15.0  # seat mode: a seat that does not answer in this many seconds overflows to the flow
    cache_dir: str = "var/prompts"  # generated and converted prompts (regenerated when their text changes)


@dataclass(frozen=True)
class Settings:
    asr: AsrSettings = field(default_factory=AsrSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    sms: SmsSettings = field(default_factory=SmsSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    followup: FollowupSettings = field(default_factory=FollowupSettings)
    ivr: IvrSettings = field(default_factory=IvrSettings)
    platforms: dict[str, PlatformSettings] = field(default_factory=dict)
    sites: dict[str, SiteSettings] = field(default_factory=dict)
    source: str = "defaults"


def _validate(s: Settings) -> None:
    def bad(key: str, value: Any, fix: str) -> ConfigError:
        return ConfigError(f"配置错误 / bad setting {key} = {value!r} ({s.source}): {fix}")

    if s.asr.engine != "vosk":
        raise bad("asr.engine", s.asr.engine, 'only "vosk" is available')
    if not 20 <= s.asr.partial_every_ms <= 5000:
        raise bad("asr.partial_every_ms", s.asr.partial_every_ms, "use 20..5000 ms (200 is a good balance)")
    if s.asr.sample_rate not in (8000, 16000):
        raise bad("asr.sample_rate", s.asr.sample_rate, "use 16000 (Vosk small models) or 8000")
    if s.asr.mode not in ("processes", "threads"):
        raise bad("asr.mode", s.asr.mode, 'use "processes" (default) or "threads"')
    if not 0 <= s.asr.processes <= 64:
        raise bad("asr.processes", s.asr.processes, "use 0 (one per core) .. 64")
    if not 1 <= s.asr.streams_per_process <= 64:
        raise bad("asr.streams_per_process", s.asr.streams_per_process, "use 1..64 (8 suits one core)")
    if s.asr.max_active < 0 or not 0 <= s.asr.beam <= 30:
        raise bad("asr.max_active", (s.asr.max_active, s.asr.beam), "use 0 (model default) or e.g. max_active = 1000, beam = 8")
    if s.asr.max_delay <= 0:
        raise bad("asr.max_delay", s.asr.max_delay, "use a positive number of seconds (3 is a good start)")
    if ":" in s.sip.address:
        raise bad("sip.address", s.sip.address, "IPv6 is not available: the pjsua2-python 2.15 wheel is built without "
                  "IPv6 media (its accounts refuse IPv6 RTP). Use an IPv4 address; put an IPv6-capable SBC or the "
                  "Kamailio front before fenliu if the PBX speaks IPv6 only")
    unknown = [x for x in s.sip.transports if x not in ("udp", "tcp", "tls")]
    if unknown or not s.sip.transports or len(set(s.sip.transports)) != len(s.sip.transports):
        raise bad("sip.transports", list(s.sip.transports), 'a list of "udp", "tcp" and "tls", each once, e.g. ["udp", "tcp"]')
    if "tls" in s.sip.transports:
        for k in ("tls_cert", "tls_key"):
            path = getattr(s.sip, k)
            if not path:
                raise bad(f"sip.{k}", path, "TLS needs a PEM certificate and its key: set sip.tls_cert and sip.tls_key")
            if not Path(path).is_file():
                raise bad(f"sip.{k}", path, "no such file (a PEM file readable by fenliu)")
    if "tls" in s.sip.transports:
        tls_base = s.sip.tls_port or s.sip.port + s.sip.workers
        taken = set(range(s.sip.port, s.sip.port + s.sip.workers)) | {s.sip.front_port}
        if taken & set(range(tls_base, tls_base + s.sip.workers)):
            raise bad("sip.tls_port", s.sip.tls_port, f"the workers' TLS ports {tls_base}..{tls_base + s.sip.workers - 1} "
                      "overlap their SIP ports or the front's: choose another base")
        front_tls = s.sip.front_tls_port or s.sip.front_port + 1
        if s.sip.front_port and front_tls in taken | set(range(tls_base, tls_base + s.sip.workers)):
            raise bad("sip.front_tls_port", s.sip.front_tls_port, f"port {front_tls} is already a worker's or the "
                      "front's: choose a free one")
    if s.sip.tls_port and not 0 < s.sip.tls_port < 65536:
        raise bad("sip.tls_port", s.sip.tls_port, "a port number, or 0 for the one right after the workers' ports")
    if not 0.2 <= s.sip.front_timeout <= 30:
        raise bad("sip.front_timeout", s.sip.front_timeout, "use 0.2 to 30 seconds (default 1.5)")
    if s.sip.max_hold < 0:
        raise bad("sip.max_hold", s.sip.max_hold, "use 0 (no limit) or a positive number of seconds")
    if s.sip.media_timeout < 0 or s.sip.max_duration < 0:
        raise bad("sip.media_timeout", s.sip.media_timeout, "use 0 (off) or a positive number of seconds")
    if not 0 <= s.vad.aggressiveness <= 3:
        raise bad("vad.aggressiveness", s.vad.aggressiveness, "use 0 (least) .. 3 (most aggressive)")
    if not -100 <= s.vad.energy_floor_dbfs <= -20:
        raise bad("vad.energy_floor_dbfs", s.vad.energy_floor_dbfs, "use -100 (off) .. -20 dBFS; -50 suits phone lines")
    if s.vad.frame_ms not in (10, 20, 30):
        raise bad("vad.frame_ms", s.vad.frame_ms, "webrtcvad takes 10, 20 or 30 ms frames")
    for k in ("min_speech_ms", "start_window_ms", "stop_ms", "padding_ms", "max_utterance_ms"):
        v = getattr(s.vad, k)
        if v < s.vad.frame_ms:
            raise bad(f"vad.{k}", v, f"must be at least one frame ({s.vad.frame_ms} ms)")
    if s.vad.min_speech_ms > s.vad.start_window_ms:
        raise bad("vad.min_speech_ms", s.vad.min_speech_ms, "must not exceed vad.start_window_ms")
    if s.transfer.mode not in ("three-way", "refer", "attended"):
        raise bad("transfer.mode", s.transfer.mode, 'use "three-way", "refer" or "attended"')
    if s.transfer.answer_timeout <= 0:
        raise bad("transfer.answer_timeout", s.transfer.answer_timeout, "use a positive number of seconds")
    if s.transfer.allow_uris_role not in ("operator", "supervisor", "admin"):
        raise bad("transfer.allow_uris_role", s.transfer.allow_uris_role, 'use "operator", "supervisor" or "admin"')
    for pattern in (x.strip() for x in s.transfer.allow_uris.split(",") if x.strip()):
        if not pattern.startswith(("sip:", "sips:")) or pattern in ("sip:*", "sips:*"):
            raise bad("transfer.allow_uris", pattern, 'patterns of SIP addresses a role may dial, e.g. "sip:*@10.20.0.*" '
                      "(never every address)")
    for tid, label in s.transfer.names.items():
        if not isinstance(label, str) or not label.strip() or len(label) > 60:
            raise bad(f"transfer.names.{tid}", label, 'a name of 1..60 characters, e.g. "12345 政务服务便民热线" '
                      '(the number first, if the service has one)')
    if s.transfer.max_command_age <= 0:
        raise bad("transfer.max_command_age", s.transfer.max_command_age, "seconds > 0, e.g. 3")
    if s.transfer.min_talk < 0:
        raise bad("transfer.min_talk", s.transfer.min_talk, "use 0 (off) or a number of seconds, e.g. 3")
    for tid, uri in s.transfer.targets.items():
        if not uri.startswith("sip:"):
            raise bad(f"transfer.targets.{tid}", uri, "a target is a SIP URI: sip:12345@pbx.example:5060")
    seat_list = [x.strip() for x in s.sip.seats.split(",") if x.strip()]
    if seat_list and s.sip.seat_uri:
        raise bad("sip.seats", s.sip.seats, "set sip.seats (fenliu rings the seats) or sip.seat_uri (one seat or the "
                                            "PBX's ACD queue), not both")
    if any(not x.startswith("sip:") for x in seat_list) or len(set(seat_list)) != len(seat_list):
        raise bad("sip.seats", s.sip.seats, 'distinct SIP URIs, comma-separated: "sip:seat01@pbx:5060, sip:seat02@pbx:5060"')
    if s.sip.seat_strategy not in ("longest-idle", "round-robin"):
        raise bad("sip.seat_strategy", s.sip.seat_strategy, '"longest-idle" or "round-robin"')
    if s.sip.drain_timeout < 0:
        raise bad("sip.drain_timeout", s.sip.drain_timeout, "0 (wait for every call to end) or a number of seconds")
    if s.sip.seat_ring < 0:
        raise bad("sip.seat_ring", s.sip.seat_ring, "seconds a seat rings before the next (0: until it answers)")
    if s.sip.seat_uri and not s.sip.seat_uri.startswith("sip:"):
        raise bad("sip.seat_uri", s.sip.seat_uri, "a SIP URI such as sip:seat01@pbx:5060, or empty")
    if s.sip.fallback_uri and (not s.sip.fallback_uri.startswith("sip:") or any(c in s.sip.fallback_uri for c in ' "\\$')):
        raise bad("sip.fallback_uri", s.sip.fallback_uri, "the operators' SIP URI, e.g. sip:acd@pbx:5060, or empty")
    if s.router.switch_margin < 0:
        raise bad("router.switch_margin", s.router.switch_margin, "use 0 or more")
    if bool(s.console.tls_cert) != bool(s.console.tls_key):
        raise bad("console.tls_cert", s.console.tls_cert, "set both console.tls_cert and console.tls_key (PEM files)")
    if not 1 <= s.console.header_timeout <= 300:
        raise bad("console.header_timeout", s.console.header_timeout, "use 1..300 seconds (10 is usual)")
    if not 1 <= s.console.max_streams_per_session <= 100:
        raise bad("console.max_streams_per_session", s.console.max_streams_per_session,
                  "use 1..100 (open console tabs and API readers per session)")
    if not 1 <= s.console.max_body_kb <= 10240 or not 100 <= s.console.event_buffer <= 1_000_000:
        raise bad("console.max_body_kb", (s.console.max_body_kb, s.console.event_buffer),
                  "use max_body_kb 1..10240 and event_buffer 100..1000000")
    if s.console.session_idle_minutes <= 0:
        raise bad("console.session_idle_minutes", s.console.session_idle_minutes, "use a positive number of minutes")
    for k, port in (("sip.port", s.sip.port), ("console.port", s.console.port)):
        if not 0 < port < 65536:
            raise bad(k, port, "a port is 1..65535")
    if s.sip.registrar and not (s.sip.registrar.startswith("sip:") and s.sip.reg_user):
        raise bad("sip.registrar", s.sip.registrar, "use sip:host:port and set sip.reg_user (and FENLIU_SIP__REG_PASSWORD)")
    if not 8 <= s.sip.rtp_range <= 1000:
        raise bad("sip.rtp_range", s.sip.rtp_range, "each worker needs 8..1000 RTP ports (2 per call, 4 calls)")
    if not (1024 <= s.sip.rtp_port and s.sip.rtp_port + s.sip.workers * s.sip.rtp_range < 65536):
        raise bad("sip.rtp_port", s.sip.rtp_port, "use 1024..65535 with room for workers × rtp_range ports")
    if s.sip.front_port and (not 0 < s.sip.front_port < 65536
                             or s.sip.port <= s.sip.front_port < s.sip.port + s.sip.workers):
        raise bad("sip.front_port", s.sip.front_port, "a free port outside the workers' sip.port .. sip.port+workers-1")
    if not 1 <= s.sip.workers <= 64:
        raise bad("sip.workers", s.sip.workers, "use 1..64 SIP worker processes")
    if not s.store.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise bad("store.url", s.store.url, "use sqlite:///PATH or postgresql://USER@HOST/DB")
    if s.store.centre not in ("auto", "on", "off") or (s.store.centre == "on" and s.store.url.startswith("sqlite")):
        raise bad("store.centre", s.store.centre, '"auto" (a live view shared by every instance on a PostgreSQL '
                                                  'store), "on" (PostgreSQL only) or "off"')
    if s.store.centre_keep_hours <= 0:
        raise bad("store.centre_keep_hours", s.store.centre_keep_hours, "a number of hours > 0, e.g. 24")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(s.store.timezone)
    except Exception:
        raise bad("store.timezone", s.store.timezone, 'an IANA time zone such as "Asia/Shanghai"') from None
    if s.store.transcript_days < 0 or s.store.recording_days < 0:
        raise bad("store.transcript_days", (s.store.transcript_days, s.store.recording_days), "use 0 (keep) or days")
    if s.sms.url and not s.sms.url.startswith(("http://", "https://")):
        raise bad("sms.url", s.sms.url, "the SMS gateway's http(s):// URL, or empty")
    if s.sms.per_number_per_day < 1:
        raise bad("sms.per_number_per_day", s.sms.per_number_per_day, "use 1 or more")
    if not 0 < s.outbox.retry_base <= s.outbox.retry_max:
        raise bad("outbox.retry_base", (s.outbox.retry_base, s.outbox.retry_max), "use 0 < retry_base <= retry_max")
    if s.outbox.poll_seconds <= 0 or s.outbox.lease_seconds <= 0 or s.outbox.stuck_minutes <= 0:
        raise bad("outbox.poll_seconds", s.outbox.poll_seconds, "poll_seconds, lease_seconds, stuck_minutes > 0")
    if s.followup.window_days <= 0 or s.followup.cluster_days <= 0 or s.followup.cluster_min_numbers < 2:
        raise bad("followup.window_days", s.followup.window_days, "positive days; cluster_min_numbers >= 2")
    if s.ivr.when not in ("overflow", "always"):
        raise bad("ivr.when", s.ivr.when, 'use "overflow" (seat busy or no answer, and ivr.numbers) or "always"')
    if s.ivr.queue_uri and not s.ivr.queue_uri.startswith("sip:"):
        raise bad("ivr.queue_uri", s.ivr.queue_uri, "the operators' queue as a SIP URI, e.g. sip:acd@pbx:5060")
    if s.ivr.flow and not (s.ivr.queue_uri or s.sip.seat_uri):
        raise bad("ivr.queue_uri", "", "an IVR flow hands callers to the operators: set ivr.queue_uri (the PBX's "
                  "ACD queue) or sip.seat_uri")
    if s.ivr.queue_timeout <= 0 or s.ivr.seat_timeout < 0:
        raise bad("ivr.queue_timeout", (s.ivr.queue_timeout, s.ivr.seat_timeout),
                  "queue_timeout > 0 s; seat_timeout >= 0 s (0: wait for the seat's own answer)")
    for pid, p in s.platforms.items():
        if p.url and not p.url.startswith(("http://", "https://")):
            raise bad(f"platforms.{pid}.url", p.url, "the platform's http(s):// URL, or empty")
        if bool(p.client_cert) != bool(p.client_key):
            raise bad(f"platforms.{pid}.client_cert", p.client_cert, "set both client_cert and client_key (PEM)")
        if p.timeout <= 0 or p.deadline_hours <= 0:
            raise bad(f"platforms.{pid}.timeout", p.timeout, "positive seconds / hours")
    for sid, site in s.sites.items():
        for tid, pid in site.platforms.items():
            if pid and pid not in s.platforms:
                raise bad(f"sites.{sid}.platforms.{tid}", pid, f"no [platforms.{pid}] (known: "
                          f"{', '.join(s.platforms) or 'none'})")
        for tid, uri in site.targets.items():
            if not uri.startswith("sip:"):
                raise bad(f"sites.{sid}.targets.{tid}", uri, "a target is a SIP URI: sip:12345@pbx.example:5060")


def _coerce(key: str, value: Any, typ: Any, source: str) -> Any:
    if typ == tuple[str, ...]:  # a TOML list of strings, or "udp,tcp" from the environment
        if isinstance(value, str):
            value = [x.strip() for x in value.split(",") if x.strip()]
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return tuple(value)
        raise ConfigError(f"配置错误 / bad setting {key} = {value!r} ({source}): must be a list of strings, "
                          f'e.g. {key.split(".")[-1]} = ["udp", "tcp"] (env: udp,tcp)')
    if typ == dict[str, str]:  # a TOML table, or "a=b,c=d" from the environment
        if isinstance(value, str):
            try:
                value = dict(item.split("=", 1) for item in value.split(",") if item.strip())
            except ValueError:
                value = None
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return {k.strip(): v.strip() for k, v in value.items()}
        raise ConfigError(f"配置错误 / bad setting {key} = {value!r} ({source}): must be a table of strings, "
                          f"e.g. [{key}] with 12345 = \"sip:12345@pbx\" (env: 12345=sip:...,12348=sip:...)")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[typ]
    if ok:
        return typ(value)
    if isinstance(value, str):  # from the environment
        try:
            if typ is bool and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            if typ in (int, float):
                return typ(value)
        except ValueError:
            pass
    raise ConfigError(f"配置错误 / bad setting {key} = {value!r} ({source}): must be {typ.__name__}")


def _apply(section_obj: Any, section: str, values: dict[str, Any], source: str) -> Any:
    hints = get_type_hints(type(section_obj))
    known = [f.name for f in fields(section_obj)]
    changes = {}
    for k, v in values.items():
        if k not in known:
            # a transposition (modle -> model) is the likeliest typo; then difflib's nearest
            guess = [x for x in known if sorted(x) == sorted(k)] or difflib.get_close_matches(k, known, n=2)
            hint = (" did you mean " + " or ".join(f"{section}.{g}" for g in guess) + "?") if guess \
                else f" known keys: {', '.join(known)}"
            raise ConfigError(f"配置错误 / unknown setting {section}.{k} ({source});{hint}")
        changes[k] = _coerce(f"{section}.{k}", v, hints[k], source)
    return replace(section_obj, **changes)


NAMED_SECTIONS: dict[str, type] = {"platforms": PlatformSettings, "sites": SiteSettings}


def _named(section: str, values: dict[str, Any], source: str) -> dict[str, Any]:
    """``[platforms.ID]`` / ``[sites.ID]`` tables: one settings object per id."""
    out = {}
    for ident, table in values.items():
        if not isinstance(table, dict):
            raise ConfigError(f"配置错误 / [{section}] in {source}: {ident} must be a table, e.g. [{section}.{ident}]")
        out[str(ident)] = _apply(NAMED_SECTIONS[section](), f"{section}.{ident}", table, source)
    return out


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    s = Settings()
    sections = [f.name for f in fields(Settings) if is_dataclass(f.default_factory)]
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"配置文件不存在 / config file not found: {p}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"配置文件语法错误 / {p}: TOML syntax error: {e}") from e
        for sec, values in data.items():
            if sec in NAMED_SECTIONS and isinstance(values, dict):
                s = replace(s, **{sec: _named(sec, values, str(p))})  # type: ignore[arg-type]
                continue
            if sec not in sections or not isinstance(values, dict):
                guess = difflib.get_close_matches(sec, sections, n=1)
                hint = f"did you mean [{guess[0]}]?" if guess else f"sections: {', '.join(sections)}"
                raise ConfigError(f"配置错误 / unknown section [{sec}] in {p}; {hint}")
            s = replace(s, **{sec: _apply(getattr(s, sec), sec, values, str(p))})
        s = replace(s, source=str(p))
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        sec, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        if sec not in sections:
            raise ConfigError(f"配置错误 / environment variable {name}: unknown section '{sec}'; "
                              f"sections: {', '.join(sections)}")
        s = replace(s, **{sec: _apply(getattr(s, sec), sec, {key: value}, f"environment {name}")})
    _validate(s)
    return s


SEAT_LIST = "*seats*"  # the service seat of a seat list: no operator's, until a seat answers the call


def service_seat(settings: Settings) -> str:
    """The seat a call belongs to until its answering seat is known: sip.seat_uri's user; with a
    seat list a name no operator has (supervisors see the ringing call; the seat that answers,
    its operator); "" in answer mode (everybody's)."""
    if settings.sip.seats.strip():
        return SEAT_LIST
    return seat_name(settings.sip.seat_uri)


def seat_name(seat_uri: str) -> str:
    """``sip:seat01@pbx:5060`` → ``seat01`` (the seat every call rings in B2BUA mode)."""
    return seat_uri.split(":", 1)[-1].split("@", 1)[0] if seat_uri else ""
