"""The worker protocol: every message survives encode/decode with its types intact, the decoder
refuses what it cannot read with a message naming the fault, and the names and capacities the
rest of the service relies on."""

import json
from dataclasses import MISSING, fields, is_dataclass

import pytest

from fenliu.sip import protocol as P
from fenliu.sip.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    TransferMode,
    TransferStep,
    WorkerSettings,
    decode,
    encode,
)


def concrete_messages() -> list[type]:
    found, todo = [], list(P.Message.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls not in (P.Fact, P.Command):
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def sample(cls: type):
    """One instance of ``cls`` with every field set to a value that differs from its default."""
    values = {}
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        hint = str(f.type)
        if hint == "str":
            value = f"{f.name} 样本 ✓"
        elif hint == "bool":
            value = not default if default is not None else True
        elif hint in ("int", "int | None"):
            value = 7
        elif hint == "float":
            value = 1.5 if default != 1.5 else 2.5
        elif hint == "tuple[str, ...]":
            value = ("caller", "hotline")
        elif hint == "TransferStep":
            value = TransferStep.BRIDGED
        elif hint == "TransferMode":
            value = TransferMode.ATTENDED
        elif hint == "QueueStep":
            value = P.QueueStep.ANSWERED
        elif hint == "WorkerSettings":
            value = sample(WorkerSettings)
        else:
            raise AssertionError(f"{cls.__name__}.{f.name}: no sample for type {hint}; teach sample() this type")
        assert value != default, f"{cls.__name__}.{f.name}: the sample must differ from the default"
        values[f.name] = value
    return cls(**values)


MESSAGES = concrete_messages()


def test_the_walk_finds_facts_and_commands():
    names = {c.__name__ for c in MESSAGES}
    assert {"Ready", "CallStarted", "TransferUpdate", "AsrDone", "AsrStats", "Configure", "Transfer",
            "Shutdown"} <= names
    assert len(MESSAGES) >= 30


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_every_message_round_trips_with_its_types(cls):
    msg = sample(cls)
    line = encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one message, one line
    back = decode(line)
    assert back == msg
    for f in fields(cls):  # an enum must come back as the enum, a tuple as a tuple, settings as settings
        assert type(getattr(back, f.name)) is type(getattr(msg, f.name)), f.name


def test_configure_carries_nested_settings_with_tuples():
    settings = WorkerSettings("w1", "10.0.0.5", 5062, 20000, users=("110", "122"), allow=("10.0.0.1",),
                              seat_uri="sip:seat@10.0.0.9", reserve_transfer_leg=False)
    back = decode(encode(P.Configure(settings)))
    assert isinstance(back, P.Configure) and back.settings == settings
    assert back.settings.users == ("110", "122") and isinstance(back.settings.allow, tuple)


def test_defaults_fill_in_and_enum_defaults_decode_as_enums():
    back = decode(encode(P.Transfer("c1", "sip:12345@pbx")))
    assert back == P.Transfer("c1", "sip:12345@pbx")
    assert back.mode is TransferMode.THREE_WAY
    # a sender that omits defaulted fields is read with the defaults
    minimal = json.dumps({"v": PROTOCOL_VERSION, "type": "Transfer", "call_id": "c1", "target": "sip:x@y"})
    t = decode(minimal)
    assert t.mode is TransferMode.THREE_WAY and t.timeout == 20.0


def test_a_newline_inside_a_value_stays_inside_one_line():
    msg = P.CallRejected(400, "bad\nrequest\r\n", "c\n1")
    line = encode(msg)
    assert line.count(b"\n") == 1
    assert decode(line.decode()) == msg  # str input too


# -- what the decoder refuses ----------------------------------------------------------------------


def raw(**data) -> bytes:
    return json.dumps(data).encode()


def refused(line) -> str:
    with pytest.raises(ProtocolError) as e:
        decode(line)
    return str(e.value)


def test_another_protocol_version_names_both_versions_and_says_restart():
    line = json.loads(encode(P.CallAnswered("c1")))
    line["v"] = PROTOCOL_VERSION - 1
    why = refused(json.dumps(line))
    assert f"protocol version {PROTOCOL_VERSION - 1}" in why and f"expected {PROTOCOL_VERSION}" in why
    assert "restart" in why
    assert "version None" in refused(raw(type="CallAnswered", call_id="c1"))  # no version at all


@pytest.mark.parametrize("name", ["Bogus", "Fact", "Command", "Message", "WorkerSettings", None])
def test_unknown_or_abstract_types_are_refused(name):
    assert "unknown message type" in refused(raw(v=PROTOCOL_VERSION, type=name, call_id="c1"))


def test_a_missing_required_field_is_named():
    assert "CallAnswered: missing field 'call_id'" in refused(raw(v=PROTOCOL_VERSION, type="CallAnswered"))
    assert "CallEnded: missing field 'slot'" in refused(
        raw(v=PROTOCOL_VERSION, type="CallEnded", call_id="c1", status=200, reason="ok"))


def test_a_missing_field_inside_the_settings_is_named():
    settings = json.loads(encode(P.Configure(WorkerSettings("w0", "127.0.0.1", 5060, 20000))))["settings"]
    del settings["sip_port"]
    assert "WorkerSettings: missing field 'sip_port'" in refused(
        raw(v=PROTOCOL_VERSION, type="Configure", settings=settings))


def test_an_unknown_enum_value_is_refused_with_the_field():
    why = refused(raw(v=PROTOCOL_VERSION, type="TransferUpdate", call_id="c1", step="exploded"))
    assert "TransferUpdate.step" in why and "exploded" in why


@pytest.mark.parametrize("line", [b"not json", b"{\"v\": 2,", b"", b"\xc3\x28\xa0\xa1"],
                         ids=["text", "truncated", "empty", "bad-utf8"])
def test_non_json_is_refused(line):
    assert "not a JSON line" in refused(line)


@pytest.mark.parametrize("line", ["[2, \"CallAnswered\"]", "\"CallAnswered\"", "42", "null"])
def test_json_that_is_not_an_object_is_refused(line):
    assert "must be a JSON object" in refused(line)


# -- names and plain values --------------------------------------------------------------------------


@pytest.mark.parametrize("msg, kind", [
    (P.CallStarted("c1", 0), "call_started"),
    (P.CallEnded("c1", 0, 200, "ok"), "call_ended"),
    (P.TransferUpdate("c1", TransferStep.FAILED), "transfer_failed"),
    (P.TransferUpdate("c1", TransferStep.BRIDGED), "transfer_bridged"),
    (P.WorkerError("boom"), "error"),
    (P.AsrDone("c1", "caller"), "call_asr_done"),
    (P.AsrStats("asr0", 0, 0, 0, 0, 0.0, 0.0), "asr_stats"),
    (P.MediaTimeout("c1", 10.0, 0), "media_timeout"),
    (P.ReleaseOperator("c1"), "release_operator"),
])
def test_kind_names(msg, kind):
    assert msg.kind == kind


def test_to_dict_has_the_event_name_and_plain_values():
    d = P.TransferUpdate("c1", TransferStep.FAILED, "sip:12345@pbx", TransferMode.REFER, 603, "declined",
                         True, ("caller",)).to_dict()
    assert d["event"] == "transfer_failed"
    assert d["step"] == "failed" and type(d["step"]) is str
    assert d["mode"] == "refer" and type(d["mode"]) is str
    assert d["legs"] == ("caller",) and d["status"] == 603 and d["final"] is True
    t = P.Transfer("c1", "sip:x@y").to_dict()
    assert t == {"event": "transfer", "call_id": "c1", "target": "sip:x@y", "mode": "three-way", "timeout": 20.0,
                 "drop_operator_after": 0.0, "min_talk": 0.0}
    assert type(t["mode"]) is str
    c = P.Configure(WorkerSettings("w0", "127.0.0.1", 5060, 20000)).to_dict()
    assert c["event"] == "configure" and c["settings"]["name"] == "w0"
    json.dumps(c)  # plain data all the way down


def test_every_message_to_dict_is_json_ready():
    for cls in MESSAGES:
        d = sample(cls).to_dict()
        assert d["event"] == sample(cls).kind
        assert json.loads(json.dumps(d)) is not None
        for v in d.values():
            assert not is_dataclass(v)


# -- capacity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seat, reserve, legs, capacity", [
    ("", True, 2, 2),  # answer mode: caller + a hotline leg kept free
    ("sip:seat@pbx", True, 3, 1),  # seat mode: caller + operator + hotline
    ("", False, 1, 4),
    ("sip:seat@pbx", False, 2, 2),
])
def test_capacity_of_a_four_leg_worker(seat, reserve, legs, capacity):
    s = WorkerSettings("w0", "127.0.0.1", 5060, 20000, max_calls=4, seat_uri=seat, reserve_transfer_leg=reserve)
    assert s.legs_per_conversation() == legs
    assert s.capacity() == capacity


def test_capacity_is_at_least_one_conversation():
    s = WorkerSettings("w0", "127.0.0.1", 5060, 20000, max_calls=2, seat_uri="sip:seat@pbx")
    assert s.capacity() == 1


@pytest.mark.parametrize("line", ['{"v": 2, "type": "Configure", "settings": 5}',
                                  '{"v": 2, "type": "Configure", "settings": {"name": "w0"}}'])
def test_badly_typed_fields_are_protocol_errors_not_crashes(line):
    with pytest.raises(P.ProtocolError):
        P.decode(line)
