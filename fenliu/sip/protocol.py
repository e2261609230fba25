"""What a SIP worker, an ASR process and the supervisor say to each other (no pjsua2 here).

Two channels per SIP worker:

- **Audio**: one datagram per 20 ms frame on a Unix datagram socket: ``FRAME_HEADER`` (call
  slot, leg, sequence) followed by 16 kHz 16-bit mono PCM. Two control datagrams share the
  channel so that a receiver sees them in order with the frames: ``LEG_OPEN`` (payload: the
  call id, UTF-8) before a call's first frame, ``LEG_CLOSE`` after its last.
- **Control**: one JSON object per line on a Unix stream socket. Every message is one of the
  frozen dataclasses below, written as ``{"v": PROTOCOL_VERSION, "type": "<class name>", …}``
  by :func:`encode` and read back by :func:`decode` — nobody else builds or matches these
  dicts. Facts go up (worker → supervisor), commands go down; the first command is always
  :class:`Configure`, the worker's whole configuration.

A decoder meeting another protocol version, an unknown type or missing fields raises
:class:`ProtocolError` naming what was wrong.
"""

from __future__ import annotations

import json
import re
import struct
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

PROTOCOL_VERSION = 2

FRAME_HEADER = struct.Struct("!HBI")  # slot, leg, sequence
LEG_OPEN, LEG_CLOSE = 0xFE, 0xFF  # control datagrams on the audio channel (in the leg byte)
# stamped by the front on each INVITE it relays to a worker (unix seconds): a worker that gets to it
# later than the front waits for a reply has been failed over, and must not start that call
RELAYED_HEADER = "X-Fenliu-Relayed"


class Leg(IntEnum):
    CALLER = 0
    OPERATOR = 1
    HOTLINE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


LEG_CALLER, LEG_OPERATOR, LEG_HOTLINE = Leg.CALLER, Leg.OPERATOR, Leg.HOTLINE


def leg_label(leg: int) -> str:
    """The name of a leg number as it appears in the audio header ("caller", …, or "legN")."""
    return Leg(leg).label if leg in Leg._value2member_map_ else f"leg{leg}"


class ConversationState(StrEnum):
    RINGING = "ringing"  # the caller is offered (B2BUA: the seat is being dialled)
    TALKING = "talking"  # caller and operator (or the worker alone, answer mode)
    TRANSFERRING = "transferring"  # hotline leg dialled / REFER sent
    CONSULTED = "consulted"  # attended: hotline answered the consultation, REFER with Replaces sent
    THREE_WAY = "three-way"  # caller, operator and hotline bridged
    HANDED_OVER = "handed-over"  # the operator left: caller and hotline talk on
    ENDED = "ended"


class TransferStep(StrEnum):
    STARTED = "started"
    PROGRESS = "progress"  # a REFER NOTIFY that is not final
    CONSULTED = "consulted"
    BRIDGED = "bridged"
    COMPLETED = "completed"
    FAILED = "failed"


class TransferMode(StrEnum):
    THREE_WAY = "three-way"
    REFER = "refer"
    ATTENDED = "attended"


class ProtocolError(ValueError):
    pass


_REGISTRY: dict[str, type[Message]] = {}


@dataclass(frozen=True)
class Message:
    """Base of every control message. ``kind`` is the snake_case name used in logs and the store."""

    direction: ClassVar[str] = ""  # "fact" (up) or "command" (down)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    @property
    def kind(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, StrEnum | IntEnum):
                d[k] = v.value if isinstance(v, StrEnum) else int(v)
        return {"event": self.kind, **d}


# -- facts: worker -> supervisor ---------------------------------------------------------------


@dataclass(frozen=True)
class Fact(Message):
    direction: ClassVar[str] = "fact"


@dataclass(frozen=True)
class Ready(Fact):
    worker: str
    sip_port: int
    rtp_port: int
    pid: int
    frame_copy: str = ""
    seat: str = ""
    capacity: int = 0  # conversations this worker admits (legs reserved for transfers)


@dataclass(frozen=True)
class StartFailed(Fact):
    message: str


@dataclass(frozen=True)
class CallStarted(Fact):
    call_id: str  # fenliu's own id of the call (a UUID: unique across instances and restarts)
    slot: int
    remote: str = ""
    local: str = ""
    t: float = field(default_factory=time.time)
    sip_call_id: str = ""  # the caller's SIP Call-ID (a PBX may reuse one; kept and searchable)


@dataclass(frozen=True)
class CallRejected(Fact):
    """A call we refused: it never became a conversation, but it is recorded."""

    status: int
    reason: str
    call_id: str = ""  # fenliu's id of the refused call (or of the live call an INVITE repeated)
    remote: str = ""
    user: str = ""
    source: str = ""
    t: float = field(default_factory=time.time)
    sip_call_id: str = ""


@dataclass(frozen=True)
class StaleInvite(Fact):
    """An INVITE reached this worker after the front had given up on it (the worker was stalled):
    refused, so no slot is held for a caller the front has already sent elsewhere."""

    sip_call_id: str
    age_s: float
    remote: str = ""


@dataclass(frozen=True)
class CallAnswered(Fact):
    call_id: str


@dataclass(frozen=True)
class CallEnded(Fact):
    call_id: str
    slot: int
    status: int
    reason: str
    frames: int = 0
    callback_us: float = 0.0
    t: float = field(default_factory=time.time)


@dataclass(frozen=True)
class LegDialing(Fact):
    call_id: str
    leg: str
    uri: str


@dataclass(frozen=True)
class LegAnswered(Fact):
    call_id: str
    leg: str


@dataclass(frozen=True)
class LegDialog(Fact):
    """A confirmed leg's SIP dialog, so that it can be hung up from outside if this worker dies."""

    call_id: str
    leg: str
    sip_call_id: str
    local: str
    remote: str
    target: str
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeatAnswered(Fact):
    """Which operator seat answered the call's operator leg (behind an ACD the dialled URI is the
    queue, not the seat): from the 2xx's configured header, P-Asserted-Identity, Contact or To."""

    call_id: str
    seat: str
    source: str = ""  # the header it came from


@dataclass(frozen=True)
class OrphansReleased(Fact):
    """After a worker died: its peers were sent BYE (status per leg; 0 = no answer)."""

    worker: str
    legs: tuple[str, ...]  # "call_id/leg=status"


@dataclass(frozen=True)
class LegEnded(Fact):
    call_id: str
    leg: str
    status: int = 0
    reason: str = ""


@dataclass(frozen=True)
class MediaActive(Fact):
    call_id: str
    slot: int
    leg: str
    codec: str = ""


@dataclass(frozen=True)
class MediaTimeout(Fact):
    call_id: str
    seconds: float
    packets: int
    why: str = ""


@dataclass(frozen=True)
class MediaProbe(Fact):
    """The caller's RTP stopped (not on hold): is anybody there? An in-dialog OPTIONS went to the
    caller's side; ``status`` is its answer (0 = none in time). Answered means present: the call
    goes on, however quiet."""

    call_id: str
    silent_s: float  # how long no RTP had come
    status: int = 0
    alive: bool = False


@dataclass(frozen=True)
class ReinviteLimited(Fact):
    """A leg sent more re-INVITEs than any PBX needs (``count`` in ``window_s``): the extra ones are
    answered 491 Request Pending — the call and the media stay as they are, never dropped."""

    call_id: str
    leg: str
    count: int
    window_s: float


@dataclass(frozen=True)
class LegHeld(Fact):
    """A leg was put on hold (a=sendonly/inactive) or taken off it: silence on hold is expected."""

    call_id: str
    leg: str
    held: bool


@dataclass(frozen=True)
class CallDegraded(Fact):
    """Live recognition is delayed or unavailable for this call; the call itself goes on."""

    call_id: str
    reason: str
    leg: str = "caller"


@dataclass(frozen=True)
class TransferUpdate(Fact):
    call_id: str
    step: TransferStep
    target: str = ""
    mode: str = ""
    status: int = 0
    reason: str = ""
    final: bool = False
    legs: tuple[str, ...] = ()  # bridged: the legs now in the conference

    @property
    def kind(self) -> str:
        return f"transfer_{self.step.value}"


@dataclass(frozen=True)
class Dtmf(Fact):
    call_id: str
    leg: str
    digit: str
    method: str


@dataclass(frozen=True)
class PromptStarted(Fact):
    call_id: str
    leg: str
    wav: str
    token: str = ""  # the Play command's token: which prompt of an IVR flow this is


@dataclass(frozen=True)
class PromptDone(Fact):
    call_id: str
    leg: str
    wav: str
    token: str = ""
    interrupted: bool = False  # stopped by StopPrompt (barge-in), not played to its end


class QueueStep(StrEnum):
    DIALING = "dialing"  # the operators' queue (ACD or seat) is being dialled
    ANSWERED = "answered"  # an operator took the call: caller and operator are bridged
    FAILED = "failed"  # busy, no answer or rejected: the caller stays on the line (the IVR)


@dataclass(frozen=True)
class QueueUpdate(Fact):
    """The IVR handing a caller to the operators' queue (``ToQueue``), step by step."""

    call_id: str
    step: QueueStep
    uri: str = ""
    status: int = 0
    reason: str = ""

    @property
    def kind(self) -> str:
        return f"queue_{self.step.value}"


@dataclass(frozen=True)
class Overflowed(Fact):
    """Seat mode: the operator seat was busy or did not answer, so the caller was answered for the
    IVR front desk (``ivr`` settings) instead of being turned away."""

    call_id: str
    status: int
    reason: str


@dataclass(frozen=True)
class Registration(Fact):
    code: int
    reason: str
    active: bool
    expires: int


@dataclass(frozen=True)
class WorkerError(Fact):
    message: str
    call_id: str = ""

    @property
    def kind(self) -> str:
        return "error"


@dataclass(frozen=True)
class Stopped(Fact):
    worker: str
    dropped_frames: int = 0
    callback_errors: int = 0


# facts the supervisor itself states about a worker or the service
@dataclass(frozen=True)
class WorkerLost(Fact):
    worker: str
    rc: int | None = None
    calls: int = 0  # its conversations, recorded as ended


@dataclass(frozen=True)
class WorkerRestarted(Fact):
    worker: str
    restarts: int


@dataclass(frozen=True)
class RestartFailed(Fact):
    worker: str
    attempt: int
    message: str
    retry_in: float


@dataclass(frozen=True)
class IvrStep(Fact):
    """Where a caller is in the IVR flow (stated by the supervisor's IVR desk): for the console
    (the call card shows the step, the urgency and why), the store and the log."""

    call_id: str
    flow: str
    state: str
    step: str  # the state's kind on entry, or what happened: barge_in, key, retry, no_input, decide, …
    detail: str = ""
    urgent: bool = False
    outcome: str = ""  # when the flow is over: transferred, queued, hung_up, caller_left


@dataclass(frozen=True)
class FrontEvent(Fact):
    """What the Kamailio front saw: worker-down / worker-up / worker-silent / failopen (a call sent
    straight to the operators because no worker could take it)."""

    line: str


@dataclass(frozen=True)
class FrontReady(Fact):
    address: str
    port: int
    workers: int


@dataclass(frozen=True)
class AsrDone(Fact):
    """A leg's recognition finished (after the hang-up)."""

    call_id: str
    leg: str
    dropped_frames: int = 0
    audio_s: float = 0.0
    recognised_s: float = 0.0
    degraded: bool = False

    @property
    def kind(self) -> str:
        return "call_asr_done"


@dataclass(frozen=True)
class AsrStats(Fact):
    """An ASR process's counters (every few seconds): for /metrics and the health view."""

    process: str
    streams: int
    frames: int
    orphan_frames: int
    degraded: int
    lag_max_s: float  # worst lag behind the call since the last report
    busy_s: float  # CPU-bound time spent recognising, cumulative


# -- commands: supervisor -> worker ------------------------------------------------------------


@dataclass(frozen=True)
class Command(Message):
    direction: ClassVar[str] = "command"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a SIP worker needs, sent once as :class:`Configure` (one place, no drift)."""

    name: str
    address: str
    sip_port: int
    rtp_port: int
    rtp_range: int = 40
    # where frames go: the supervisor's socket, or one socket per ASR process (a call's frames all
    # go to the process its slot picks: slot % len, so calls spread evenly over the processes)
    audio_paths: tuple[str, ...] = ()
    max_calls: int = 4  # the pjsua2 wheel's limit per endpoint
    seat_uri: str = ""  # B2BUA seat mode: dial this operator seat for every incoming call
    users: tuple[str, ...] = ("110",)  # request-URI users we take; "*" = any; others get 404
    media_timeout: float = 10.0  # no RTP for this long (not on hold): ask with an OPTIONS; no answer ends the call
    max_duration: float = 0.0  # end any call after this many seconds (0 = no limit)
    max_hold: float = 0.0  # end a call whose caller is on hold longer than this (0 = no limit)
    reserve_transfer_leg: bool = True  # admit only as many calls as leave a leg for each transfer
    allow: tuple[str, ...] = ()  # static-peer mode: source addresses allowed to call (empty = any)
    registrar: str = ""  # trunk registration: sip:pbx.example:5060 (empty = static peer)
    reg_user: str = ""
    reg_password: str = ""
    reg_expires: int = 300
    reg_retry: int = 30
    session_expires: int = 1800  # SIP session timer (RFC 4028) when the peer supports it
    # the IVR front desk: seat mode answers a caller the seat turned away (busy, no answer within
    # seat_timeout) instead of rejecting it; an IVR may hand the caller to an operators' queue leg
    overflow: bool = False
    seat_timeout: float = 0.0  # seat mode with overflow: the seat must answer within this (0: no limit)
    invite_max_age: float = 1.5  # an INVITE the front relayed longer ago has been failed over: refuse it
    seat_header: str = ""  # the header of the operator leg's 2xx that names the answering seat (before PAI)
    transports: tuple[str, ...] = ("udp",)  # "udp" and "tcp" on sip_port, "tls" on tls_port
    tls_port: int = 0
    tls_cert: str = ""  # PEM files for "tls"
    tls_key: str = ""
    queue_leg: bool = False  # reserve a leg for the operators' queue (answer mode with an IVR flow)
    # seats fenliu rings itself (sip.seats), tried in the order the supervisor last sent (SeatOrder);
    # each rings seat_ring s before the next (0: until it answers or refuses)
    seats: tuple[str, ...] = ()
    seat_ring: float = 0.0

    def legs_per_conversation(self) -> int:
        operator = bool(self.seat_uri) or self.queue_leg
        return 1 + (1 if operator else 0) + (1 if self.reserve_transfer_leg else 0)

    def capacity(self) -> int:
        return max(1, self.max_calls // self.legs_per_conversation())


@dataclass(frozen=True)
class Configure(Command):
    settings: WorkerSettings


@dataclass(frozen=True)
class Hangup(Command):
    call_id: str
    reason: str = ""  # why fenliu ends it (recorded instead of the BYE's answer), e.g. a drain's bound


@dataclass(frozen=True)
class Drain(Command):
    """Take no new calls (INVITEs are answered 503 with Retry-After, so the front or the PBX tries
    another instance at once); the calls in progress go on until they end by themselves."""

    reason: str = "draining"


@dataclass(frozen=True)
class Transfer(Command):
    call_id: str
    target: str
    mode: TransferMode = TransferMode.THREE_WAY
    timeout: float = 20.0
    drop_operator_after: float = 0.0
    min_talk: float = 0.0  # a hotline hanging up sooner after answering is a failed transfer


@dataclass(frozen=True)
class ReleaseOperator(Command):
    call_id: str


@dataclass(frozen=True)
class CancelTransfer(Command):
    """Stop a transfer while the hotline is still ringing (or consulted): the hotline leg is
    hung up and the caller stays with the operator."""

    call_id: str


@dataclass(frozen=True)
class Play(Command):
    call_id: str
    wav: str
    leg: str = "caller"
    token: str = ""  # echoed in PromptStarted / PromptDone


@dataclass(frozen=True)
class StopPrompt(Command):
    """Barge-in: stop every prompt playing into the call (each reports PromptDone, interrupted)."""

    call_id: str


@dataclass(frozen=True)
class ToQueue(Command):
    """Hand the caller to the operators' queue: dial ``uri`` as the operator leg and bridge it to
    the caller when it answers (fenliu stays in the path: transcript and one key go on)."""

    call_id: str
    uri: str
    timeout: float = 30.0


@dataclass(frozen=True)
class SeatOrder(Command):
    """The order in which the next call rings the seats (sip.seats): the free ones first, by the
    strategy (longest idle, or round robin). The supervisor sends it whenever a seat is taken or
    freed; a seat taken by another worker's call meanwhile answers busy and the next one rings."""

    seats: tuple[str, ...]


@dataclass(frozen=True)
class Shutdown(Command):
    reason: str = ""


# -- codec ---------------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    body = asdict(msg)
    return (json.dumps({"v": PROTOCOL_VERSION, "type": type(msg).__name__, **body}, ensure_ascii=False)
            + "\n").encode()


def decode(line: bytes | str) -> Message:
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"not a JSON line: {e}") from e
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {data.get('v')!r}, expected {PROTOCOL_VERSION}: "
                            f"worker and supervisor come from different fenliu versions; restart the service")
    name = data.pop("type", None)
    data.pop("v")
    cls = _REGISTRY.get(str(name))
    if cls is None or cls in (Fact, Command):
        raise ProtocolError(f"unknown message type {name!r}")
    return _build(cls, data)


def _build(cls: type, data: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProtocolError(f"{cls.__name__}: missing field {f.name!r}")
            continue
        value = data[f.name]
        hint = str(f.type)
        if hint == "WorkerSettings":
            value = _build(WorkerSettings, value)
        elif hint in _ENUMS:
            try:
                value = _ENUMS[hint](value)
            except ValueError as e:
                raise ProtocolError(f"{cls.__name__}.{f.name}: {e}") from e
        elif hint.startswith("tuple") and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ProtocolError(f"{cls.__name__}: {e}") from e


_ENUMS: dict[str, type] = {"TransferStep": TransferStep, "TransferMode": TransferMode, "QueueStep": QueueStep}
