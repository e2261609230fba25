"""Load and check an IVR flow file (docs/flows.md is the format).

A flow is checked once, at start-up: every problem is a :class:`FlowError` naming the file, the
line and the fix, so a flow that loads can be run without surprises during a live call.
"""

from __future__ import annotations

import difflib
import re
import string
import struct
import tomllib
import wave
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fenliu.errors import ConfigError

DEFAULT_FLOW = Path(__file__).with_name("front_desk.toml")

DTMF = frozenset("0123456789*#")
# targets an IVR never offers: 110 itself and the urgent lane (the operator brings those in)
NEVER_OFFERED = frozenset({"police", "119", "120", "122", "fraud"})
OFFER_KEYS = 3  # at most this many hotlines are offered, on the first free keys of 1-9
SMS_FIELDS = ("hotline", "name", "category")
BRANCH_ON = ("digits", "target", "category", "urgent")
TRANSFER_MODES = ("three-way", "refer")


class FlowError(ConfigError):
    """A flow file is malformed: ``str(err)`` is ``"{path}:{line}: {message} — {fix}"``."""

    def __init__(self, path: str | Path, line: int, message: str, fix: str = "") -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        self.fix = fix
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}" + (f" — {fix}" if fix else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.message, self.fix))


# -- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str = ""
    wav: str = ""  # absolute path (resolved relative to the flow file), "" if none
    line: int = 0


@dataclass(frozen=True)
class State:
    name: str
    line: int
    kind: ClassVar[str] = ""

    def edges(self) -> list[tuple[str, str]]:
        """(label, target state) for every outgoing edge."""
        return []

    @property
    def terminal(self) -> bool:
        """The flow may end here."""
        return False

    def prompts(self) -> tuple[str, ...]:
        """The prompt names this state plays."""
        names: tuple[str, ...] = getattr(self, "prompt", ())
        retry = getattr(self, "retry_prompt", "")
        return names + ((retry,) if retry else ())


@dataclass(frozen=True, kw_only=True)
class Play(State):
    kind: ClassVar[str] = "play"
    prompt: tuple[str, ...]
    next: str
    barge_in: bool = True

    def edges(self) -> list[tuple[str, str]]:
        return [("next", self.next)]


@dataclass(frozen=True, kw_only=True)
class Collect(State):
    kind: ClassVar[str] = "collect"
    no_input: str
    prompt: tuple[str, ...] = ()
    barge_in: bool = True
    digits: int = 1
    terminator: str = "#"
    timeout: float = 5.0
    inter_digit: float = 3.0
    retries: int = 2
    retry_prompt: str = ""
    branches: dict[str, str] = field(default_factory=dict)
    offer: str = ""
    offer_intro: str = ""
    offer_key: str = ""
    offer_next: str = ""
    next: str = ""
    invalid: str = ""

    def edges(self) -> list[tuple[str, str]]:
        out = list(self.branches.items())
        if self.offer_next:
            out.append(("offer", self.offer_next))
        if self.next:
            out.append(("next", self.next))
        if self.invalid:
            out.append(("invalid", self.invalid))
        out.append(("no_input", self.no_input))
        return out

    def offer_keys(self) -> tuple[str, ...]:
        """The keys an offer uses: the first free ones of 1-9 (keys of ``branches`` are taken)."""
        if self.offer != "targets":
            return ()
        return tuple(k for k in "123456789" if k not in self.branches)[:OFFER_KEYS]


@dataclass(frozen=True, kw_only=True)
class Listen(State):
    kind: ClassVar[str] = "listen"
    next: str
    no_input: str
    max_seconds: float = 15.0
    silence: float = 1.2
    no_input_seconds: float = 6.0

    def edges(self) -> list[tuple[str, str]]:
        return [("next", self.next), ("no_input", self.no_input)]


@dataclass(frozen=True, kw_only=True)
class Decide(State):
    kind: ClassVar[str] = "decide"
    danger: str
    police: str
    unsure: str
    divert: str

    def edges(self) -> list[tuple[str, str]]:
        return [("danger", self.danger), ("police", self.police), ("unsure", self.unsure),
                ("divert", self.divert)]


@dataclass(frozen=True, kw_only=True)
class Branch(State):
    kind: ClassVar[str] = "branch"
    on: str
    cases: dict[str, str]
    default: str

    def edges(self) -> list[tuple[str, str]]:
        return list(self.cases.items()) + [("default", self.default)]


@dataclass(frozen=True, kw_only=True)
class Transfer(State):
    kind: ClassVar[str] = "transfer"
    target: str
    failed: str
    mode: str = "three-way"
    prompt: tuple[str, ...] = ()
    next: str = ""

    def edges(self) -> list[tuple[str, str]]:
        return [("failed", self.failed)] + ([("next", self.next)] if self.next else [])

    @property
    def terminal(self) -> bool:
        return not self.next


@dataclass(frozen=True, kw_only=True)
class Queue(State):
    kind: ClassVar[str] = "queue"
    urgent: bool = False
    prompt: tuple[str, ...] = ()
    uri: str = ""
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class Sms(State):
    kind: ClassVar[str] = "sms"
    text: str
    next: str

    def edges(self) -> list[tuple[str, str]]:
        return [("next", self.next)]


@dataclass(frozen=True, kw_only=True)
class Hangup(State):
    kind: ClassVar[str] = "hangup"
    prompt: tuple[str, ...] = ()

    @property
    def terminal(self) -> bool:
        return True


KINDS: dict[str, type[State]] = {c.kind: c for c in (Play, Collect, Listen, Decide, Branch, Transfer,
                                                      Queue, Sms, Hangup)}


@dataclass(frozen=True)
class Flow:
    name: str
    start: str
    voice: str
    path: Path
    states: dict[str, State]
    prompts: dict[str, Prompt]  # including the offer fragments prepared at load
    names: dict[str, str]  # target id -> spoken name (every configured target)
    description: str = ""

    def state(self, name: str) -> State:
        try:
            return self.states[name]
        except KeyError:
            raise KeyError(f"flow {self.name!r} has no state {name!r}") from None

    @staticmethod
    def offer_fragment(state: str, target: str, key: str = "") -> str:
        """Name of the prompt prepared for an offer: ``key=""`` the intro, else that key's line."""
        return f"{state}:key:{key}:{target}" if key else f"{state}:intro:{target}"


# -- loading ------------------------------------------------------------------------------------


def load_flow(path: str | Path, targets: Iterable[str]) -> Flow:
    """Load and check a flow file; ``targets`` are the target ids this deployment can transfer to
    (a mapping: each with the name said for it, which the flow's [names] may override)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FlowError(p, 0, "流程文件不存在 / flow file not found",
                        "check the path (settings key ivr.flow), or start from fenliu/ivr_flows/front_desk.toml"
                        ) from None
    except IsADirectoryError:
        raise FlowError(p, 0, "这是一个目录 / this is a directory, not a flow file",
                        "name the .toml file itself") from None
    except UnicodeDecodeError as e:
        raise FlowError(p, 0, f"不是 UTF-8 编码 / not UTF-8 text ({e.reason} at byte {e.start})",
                        "save the file as UTF-8") from None
    return parse_flow(text, p, targets)


def parse_flow(text: str, path: str | Path, targets: Iterable[str]) -> Flow:
    """Check a flow given as text; ``path`` names it in messages and anchors relative WAV paths."""
    return _Loader(text, Path(path), targets).load()


def _did_you_mean(word: str, choices: Iterable[str], what: str = "") -> str:
    options = sorted(set(choices))
    close = [f'"{c}"' for c in difflib.get_close_matches(word, options, n=3, cutoff=0.6)]
    if close:
        return f"did you mean {' or '.join(close)}?"
    if what and options:
        return f"{what}: {', '.join(options)}"
    return ""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


_TOML_LINE = re.compile(r"at line (\d+)")

# the keys of each kind (docs/flows.md) and their type; a key in REQUIRED has no default
_KEYS: dict[str, dict[str, str]] = {
    "play": {"prompt": "prompts", "barge_in": "bool", "next": "state"},
    "collect": {"prompt": "prompts", "barge_in": "bool", "digits": "positive", "terminator": "terminator",
                "timeout": "seconds", "inter_digit": "seconds", "retries": "count", "retry_prompt": "prompt",
                "branches": "branches", "offer": "offer", "offer_intro": "text", "offer_key": "text",
                "offer_next": "state", "next": "state", "no_input": "state", "invalid": "state"},
    "listen": {"max_seconds": "seconds", "silence": "seconds", "no_input_seconds": "seconds",
               "next": "state", "no_input": "state"},
    "decide": {"danger": "state", "police": "state", "unsure": "state", "divert": "state"},
    "branch": {"on": "on", "cases": "cases", "default": "state"},
    "transfer": {"target": "text", "mode": "mode", "prompt": "prompts", "failed": "state", "next": "state"},
    "queue": {"urgent": "bool", "prompt": "prompts", "uri": "text", "reason": "text"},
    "sms": {"text": "text", "next": "state"},
    "hangup": {"prompt": "prompts"},
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "play": ("prompt", "next"), "collect": ("no_input",), "listen": ("next", "no_input"),
    "decide": ("danger", "police", "unsure", "divert"), "branch": ("on", "cases", "default"),
    "transfer": ("target", "failed"), "queue": (), "sms": ("text", "next"), "hangup": (),
}
_EXAMPLE = {"state": '"queue"', "prompts": '"welcome"', "prompt": '"welcome"', "text": '"…"',
            "on": '"target"', "cases": '{ "12345" = "offer" }'}
_TOP = ("flow", "prompts", "names", "states")
_FLOW_KEYS = ("name", "start", "voice", "description")


class _Loader:
    def __init__(self, text: str, path: Path, targets: Iterable[str]) -> None:
        self.text = text
        self.path = path
        self.targets = list(dict.fromkeys(str(t) for t in targets))
        # a mapping of target id -> spoken name ([transfer.names]) gives the names the flow's own
        # [names] table may override
        self.default_names = {str(k): str(v) for k, v in targets.items()} if isinstance(targets, Mapping) else {}
        self.loc = _Locator("")

    # -- helpers ---------------------------------------------------------------------------------
    def fail(self, line: int, message: str, fix: str) -> FlowError:
        return FlowError(self.path, line, message, fix)

    def at(self, *keys: str) -> int:
        return self.loc.line_of(keys)

    def table(self, value: Any, keys: tuple[str, ...], example: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            where = ".".join(keys)
            raise self.fail(self.at(*keys), f"{where} 必须是表 / {where} must be a table",
                            f"write it as [{where}] followed by key = value lines, e.g. {example}")
        return value

    # -- the whole file ----------------------------------------------------------------------------
    def load(self) -> Flow:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            m = _TOML_LINE.search(str(e))
            line = int(m.group(1)) if m else max(1, len(self.text.splitlines()))
            raise self.fail(line, f"TOML 语法错误 / syntax error: {e}",
                            "fix the TOML syntax on that line (quote text, one key = value a line, "
                            "tables in [brackets])") from None
        self.loc = _Locator(self.text)

        for key in data:
            if key not in _TOP:
                raise self.fail(self.at(key), f"未知的表 [{key}] / unknown table [{key}]",
                                _join(_did_you_mean(key, _TOP),
                                      "a flow has only [flow], [prompts], [names] and [states.NAME] tables"))
        if "flow" not in data:
            raise self.fail(1, "缺少 [flow] 表 / missing the [flow] table",
                            'start the file with [flow], name = "…" and start = "FIRST_STATE"')
        meta = self.table(data["flow"], ("flow",), 'name = "front_desk"')
        for key in meta:
            if key not in _FLOW_KEYS:
                raise self.fail(self.at("flow", key), f"[flow] 里未知的键 {key} / unknown key in [flow]",
                                _join(_did_you_mean(key, _FLOW_KEYS), f"[flow] has {', '.join(_FLOW_KEYS)}"))
        name = self.flow_string(meta, "name", required=True)
        start = self.flow_string(meta, "start", required=True)
        voice = self.flow_string(meta, "voice", default="cmn")
        description = self.flow_string(meta, "description", default="", empty_ok=True)

        names = self.load_names(data.get("names", {}))
        prompts = self.load_prompts(data.get("prompts", {}))

        raw_states = self.table(data.get("states", {}), ("states",), '[states.welcome]')
        if not raw_states:
            raise self.fail(self.at("states"), "流程没有状态 / the flow has no states",
                            f'add [states.{start}] with do = "play" (see docs/flows.md)')
        states: dict[str, State] = {n: self.load_state(n, v) for n, v in raw_states.items()}

        if start not in states:
            raise self.fail(self.at("flow", "start"), f"start 状态 {start!r} 不存在 / start state {start!r} "
                            f"does not exist",
                            _join(_did_you_mean(start, states, "the states are"),
                                  f"or add [states.{start}]"))
        self.check_references(states)
        self.check_reachable(states, start)
        self.check_exits(states, start)
        self.check_prompts(states, prompts)
        self.check_choice(states)
        prompts.update(self.offer_fragments(states, names))
        return Flow(name=name, start=start, voice=voice, path=self.path, states=states, prompts=prompts,
                    names=names, description=description)

    def flow_string(self, meta: dict[str, Any], key: str, required: bool = False, default: str = "",
                    empty_ok: bool = False) -> str:
        if key not in meta:
            if required:
                raise self.fail(self.at("flow"), f"[flow] 缺少 {key} / [flow] needs {key}",
                                f'add {key} = "…" under [flow]'
                                + (" (the name of the first state)" if key == "start" else ""))
            return default
        v = meta[key]
        if not isinstance(v, str) or (not empty_ok and not v.strip()):
            raise self.fail(self.at("flow", key), f"[flow] {key} 必须是非空字符串 / [flow] {key} must be a "
                            f"non-empty string, got {v!r}", f'write {key} = "…"')
        return v.strip() if not empty_ok else v

    def load_names(self, raw: Any) -> dict[str, str]:
        raw = self.table(raw, ("names",), '"12345" = "12345政务服务便民热线"')
        names = {t: self.default_names.get(t, t) for t in self.targets}
        for tid, spoken in raw.items():
            if not isinstance(spoken, str) or not spoken.strip():
                raise self.fail(self.at("names", tid), f"[names] {tid} 必须是非空字符串 / must be a non-empty "
                                f"string, got {spoken!r}", f'write "{tid}" = "how the hotline is said"')
            names[tid] = spoken.strip()
        return names

    # -- prompts ------------------------------------------------------------------------------------
    def load_prompts(self, raw: Any) -> dict[str, Prompt]:
        raw = self.table(raw, ("prompts",), 'welcome = "这里是110报警服务台……"')
        out: dict[str, Prompt] = {}
        for pname, v in raw.items():
            line = self.at("prompts", pname)
            text, wav = "", ""
            if isinstance(v, str):
                text = v
            elif isinstance(v, dict):
                for key, sub in v.items():
                    if key not in ("text", "wav"):
                        raise self.fail(self.at("prompts", pname, key), f"提示音 {pname} 里未知的键 {key} / "
                                        f"unknown key in prompt {pname}",
                                        _join(_did_you_mean(key, ("text", "wav")),
                                              'a prompt is { text = "…" }, { wav = "file.wav" } or both'))
                    if not isinstance(sub, str):
                        raise self.fail(self.at("prompts", pname, key), f"提示音 {pname}.{key} 必须是字符串 / "
                                        f"prompt {pname}.{key} must be a string, got {sub!r}",
                                        f'write {key} = "…"')
                text, wav = v.get("text", ""), v.get("wav", "")
            else:
                raise self.fail(line, f"提示音 {pname} 必须是文字或表 / prompt {pname} must be text or a table, "
                                f"got {v!r}", f'write {pname} = "文字" or {pname} = {{ wav = "file.wav" }}')
            if not text.strip() and not wav.strip():
                raise self.fail(line, f"提示音 {pname} 既没有文字也没有录音 / prompt {pname} has neither text "
                                f"nor wav", f'give it a text ({pname} = "……") or a recording '
                                f'({pname} = {{ wav = "prompts/{pname}.wav" }})')
            wav_path = ""
            if wav.strip():
                wav_path = str(self.check_wav(wav.strip(), self.at("prompts", pname, "wav")))
            out[pname] = Prompt(name=pname, text=text.strip(), wav=wav_path, line=line)
        return out

    def check_wav(self, wav: str, line: int) -> Path:
        p = Path(wav).expanduser()
        if not p.is_absolute():
            p = self.path.parent / p
        p = p.resolve()
        if not p.is_file():
            raise self.fail(line, f"录音文件不存在 / WAV file not found: {p}",
                            f"check the path (relative to {self.path.parent.resolve()}) or record the prompt "
                            f"there")
        try:
            with wave.open(str(p), "rb") as w:
                frames = w.getnframes()
        except (wave.Error, EOFError, OSError, struct.error, ValueError) as e:
            raise self.fail(line, f"无法读取录音 / not a readable WAV file: {p} ({e})",
                            f"save it as PCM WAV, e.g. sox IN -b 16 -c 1 -r 16000 {p.name}") from None
        if frames <= 0:
            raise self.fail(line, f"录音是空的 / the WAV file has no audio (0 frames): {p}",
                            "record the prompt again (or use a text prompt instead)")
        return p

    # -- states --------------------------------------------------------------------------------
    def load_state(self, name: str, raw: Any) -> State:
        header = self.at("states", name)
        raw = self.table(raw, ("states", name), 'do = "play"')
        if "do" not in raw:
            raise self.fail(header, f"状态 {name} 缺少 do / state {name} has no do",
                            f'add do = "…" (one of {", ".join(KINDS)})')
        kind = raw["do"]
        if not isinstance(kind, str) or kind not in KINDS:
            raise self.fail(self.at("states", name, "do"), f"状态 {name} 的 do = {kind!r} 未知 / unknown kind "
                            f"{kind!r}", _join(_did_you_mean(str(kind), KINDS, "do is one of")))
        keys = _KEYS[kind]
        for key in raw:
            if key != "do" and key not in keys:
                raise self.fail(self.at("states", name, key), f"{kind} 状态 {name} 里未知的键 {key} / unknown "
                                f"key {key} for a {kind} state",
                                _join(_did_you_mean(key, keys), f"a {kind} state has: do, {', '.join(keys)}"))
        for key in _REQUIRED[kind]:
            if key not in raw:
                raise self.fail(header, f"{kind} 状态 {name} 缺少 {key} / a {kind} state needs {key}",
                                f"add {key} = {_EXAMPLE.get(keys[key], '…')} under [states.{name}]")
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key != "do":
                kwargs[key] = self.value(name, kind, key, keys[key], value)
        self.check_kind(name, kind, kwargs)
        return KINDS[kind](name=name, line=header, **kwargs)

    def value(self, state: str, kind: str, key: str, typ: str, v: Any) -> Any:
        line = self.at("states", state, key)

        def bad(what: str, fix: str) -> FlowError:
            return self.fail(line, f"状态 {state} 的 {key} = {v!r} 不对 / bad {key} in state {state}: {what}", fix)

        is_num = isinstance(v, int | float) and not isinstance(v, bool)
        if typ == "state":
            if not isinstance(v, str) or not v.strip():
                raise bad("must name a state", f'write {key} = "STATE_NAME"')
            return v.strip()
        if typ == "prompts":
            items = [v] if isinstance(v, str) else v
            if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
                raise bad("must be a prompt name or a list of them", f'write {key} = "welcome" or '
                          f'{key} = ["welcome", "hold"]')
            if kind == "play" and not items:
                raise bad("a play state plays at least one prompt", f'write {key} = "welcome"')
            return tuple(x.strip() for x in items)
        if typ == "prompt":
            if not isinstance(v, str):
                raise bad("must be one prompt name", f'write {key} = "retry"')
            return v.strip()
        if typ == "bool":
            if not isinstance(v, bool):
                raise bad("must be true or false", f"write {key} = true or {key} = false (no quotes)")
            return v
        if typ == "positive":
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad("must be a whole number of 1 or more", f"write e.g. {key} = 1 (no quotes)")
            return v
        if typ == "count":
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad("must be a whole number of 0 or more", f"write e.g. {key} = 2 (no quotes)")
            return v
        if typ == "seconds":
            if not is_num or v <= 0:
                raise bad("must be a number of seconds above 0", f"write e.g. {key} = 5.0 (no quotes)")
            return float(v)
        if typ == "terminator":
            if not isinstance(v, str) or (v and v not in DTMF):
                raise bad('must be one key of 0-9 * # (or "" for none)', f'write {key} = "#"')
            return v
        if typ == "text":
            if not isinstance(v, str):
                raise bad("must be text", f'write {key} = "…"')
            return v
        if typ == "offer":
            if v != "targets":
                raise bad('the only offer is "targets"', 'write offer = "targets" (one key per hotline)')
            return v
        if typ == "mode":
            if v not in TRANSFER_MODES:
                raise bad(f"must be one of {', '.join(TRANSFER_MODES)}",
                          _join(_did_you_mean(str(v), TRANSFER_MODES), f'write {key} = "three-way"'))
            return v
        if typ == "on":
            if v not in BRANCH_ON:
                raise bad(f"must be one of {', '.join(BRANCH_ON)}",
                          _join(_did_you_mean(str(v), BRANCH_ON), f'write {key} = "target"'))
            return v
        if typ in ("branches", "cases"):
            if not isinstance(v, dict):
                raise bad("must be a table of value = state",
                          f'write {key} = {{ "1" = "STATE" }}')
            out: dict[str, str] = {}
            for case, target in v.items():
                cline = self.at("states", state, key, case)
                if typ == "branches" and (not case or not set(case) <= DTMF):
                    raise self.fail(cline, f"状态 {state} 的按键 {case!r} 不是电话按键 / branch key {case!r} "
                                    f"is not made of phone keys", 'a key is made of 0-9, * and #, e.g. "1" or "*0"')
                if not isinstance(target, str) or not target.strip():
                    raise self.fail(cline, f"状态 {state} 的 {key}.{case} 必须指向一个状态 / {key}.{case} must "
                                    f"name a state, got {target!r}", f'write "{case}" = "STATE_NAME"')
                out[case] = target.strip()
            return out
        raise AssertionError(typ)  # pragma: no cover - _KEYS names only the types above

    def check_kind(self, name: str, kind: str, kw: dict[str, Any]) -> None:
        """Checks that look at several keys of one state."""
        if kind == "collect":
            digits = kw.get("digits", 1)
            for case in kw.get("branches", {}):
                if len(case) > digits:
                    raise self.fail(self.at("states", name, "branches", case), f"状态 {name} 的按键 {case!r} 比 "
                                    f"digits = {digits} 长，永远按不到 / branch key {case!r} is longer than "
                                    f"digits = {digits} and can never be pressed",
                                    f"raise digits to {len(case)} or shorten the key")
            offer_keys = ("offer_intro", "offer_key", "offer_next")
            if "offer" in kw:
                for key in offer_keys:
                    if not kw.get(key, "").strip():
                        raise self.fail(self.at("states", name, key) if key in kw else self.at("states", name),
                                        f'状态 {name} 有 offer 但缺少 {key} / offer = "targets" needs {key}',
                                        _offer_fix(key, name))
                self.check_template(kw["offer_intro"], ("name", "number"), self.at("states", name, "offer_intro"),
                                    "offer_intro")
                self.check_template(kw["offer_key"], ("key", "name", "number"),
                                    self.at("states", name, "offer_key"), "offer_key")
                if not [k for k in "123456789" if k not in kw.get("branches", {})]:
                    raise self.fail(self.at("states", name, "branches"), f"状态 {name} 的 branches 占用了 1-9，"
                                    f"没有按键可以提供 / branches use every key 1-9, none is left for the offer",
                                    "free the keys 1, 2 and 3 for the offer")
            else:
                for key in offer_keys:
                    if key in kw:
                        raise self.fail(self.at("states", name, key), f"状态 {name} 有 {key} 但没有 offer / "
                                        f'{key} without offer = "targets"',
                                        f'add offer = "targets" to [states.{name}] or delete {key}')
        elif kind == "sms":
            self.check_template(kw["text"], SMS_FIELDS, self.at("states", name, "text"), "text")
            if not kw["text"].strip():
                raise self.fail(self.at("states", name, "text"), f"状态 {name} 的短信是空的 / the SMS text is empty",
                                'write text = "您反映的问题请拨打{hotline}（{name}）。"')
        elif kind == "transfer":
            target = kw["target"]
            if target != "choice" and target not in self.targets:
                configured = ", ".join(self.targets) or "(none)"
                raise self.fail(self.at("states", name, "target"), f"转接目标 {target!r} 没有配置 / transfer target "
                                f"{target!r} is not configured (targets: {configured})",
                                _join(_did_you_mean(target, self.targets),
                                      'use one of the configured targets, or "choice" after an offer, or add it '
                                      "to [transfer.targets] in the settings"))
        elif kind == "branch":
            on, cases = kw["on"], kw["cases"]
            valid: Iterable[str] | None = None
            if on == "urgent":
                valid = ("true", "false")
            elif on == "target":
                valid = self.targets
            for case in cases:
                cline = self.at("states", name, "cases", case)
                if on == "digits" and (not case or not set(case) <= DTMF):
                    raise self.fail(cline, f"状态 {name} 的 case {case!r} 不是电话按键 / case {case!r} is not "
                                    f"made of phone keys", 'with on = "digits" a case is keys: "1", "*0"')
                if valid is not None and case not in valid:
                    raise self.fail(cline, f"状态 {name} 的 case {case!r} 不可能出现 / case {case!r} can never "
                                    f"match on = {on!r}",
                                    _join(_did_you_mean(case, valid), f"the values are: {', '.join(valid)}"))

    def check_template(self, text: str, allowed: tuple[str, ...], line: int, key: str) -> None:
        names = ", ".join("{" + a + "}" for a in allowed)
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as e:
            raise self.fail(line, f"{key} 的花括号不对 / bad braces in {key}: {e}",
                            f"placeholders are {names}; write a literal brace as {{{{ or }}}}") from None
        for f in fields:
            base = re.split(r"[.\[!:]", f, maxsplit=1)[0]
            if base not in allowed:
                raise self.fail(line, f"{key} 里未知的占位符 {{{f}}} / unknown placeholder {{{f}}} in {key}",
                                _join(_did_you_mean(base, allowed), f"the placeholders are {names}"))
        try:
            text.format(**{a: "x" for a in allowed})
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as e:
            raise self.fail(line, f"{key} 的占位符不对 / bad placeholder in {key}: {e}",
                            f"write placeholders plainly: {names}") from None

    # -- whole-flow checks --------------------------------------------------------------------------
    def edge_line(self, s: State, label: str) -> int:
        if isinstance(s, Collect):
            if label in s.branches:
                return self.at("states", s.name, "branches", label)
            if label == "offer":
                return self.at("states", s.name, "offer_next")
        if isinstance(s, Branch) and label in s.cases:
            return self.at("states", s.name, "cases", label)
        return self.at("states", s.name, label)

    def check_references(self, states: dict[str, State]) -> None:
        for s in states.values():
            for label, target in s.edges():
                if target not in states:
                    raise self.fail(self.edge_line(s, label), f"状态 {s.name} 的 {label} 指向不存在的状态 {target!r} "
                                    f"/ {s.name}.{label} goes to a state that does not exist: {target!r}",
                                    _join(_did_you_mean(target, states),
                                          f"or add [states.{target}]"))

    def check_reachable(self, states: dict[str, State], start: str) -> None:
        seen = _reach(start, lambda n: [t for _, t in states[n].edges()])
        lost = sorted((s for s in states.values() if s.name not in seen), key=lambda s: s.line)
        if lost:
            names = ", ".join(s.name for s in lost)
            raise self.fail(lost[0].line, f"状态 {names} 从 start 到不了 / unreachable from start "
                            f"({start!r}): {names}", "point a next/branch of a reachable state at it, or delete it")

    def check_exits(self, states: dict[str, State], start: str) -> None:
        incoming: dict[str, list[str]] = {n: [] for n in states}
        for s in states.values():
            for _, t in s.edges():
                incoming[t].append(s.name)
        can_end: set[str] = set()
        for s in states.values():
            if s.terminal:
                can_end |= _reach(s.name, lambda n: incoming[n])
        stuck = [s for s in states.values() if s.name not in can_end]
        if not stuck:
            return
        # every stuck state has an edge and all its edges lead to stuck states: walk to a cycle
        first = min(stuck, key=lambda s: s.line).name
        path: list[str] = []
        here = first
        while here not in path:
            path.append(here)
            here = next(t for _, t in states[here].edges() if t not in can_end)
        loop = path[path.index(here):]
        i = min(range(len(loop)), key=lambda k: states[loop[k]].line)
        loop = loop[i:] + loop[:i]
        shown = " → ".join(loop + [loop[0]])
        raise self.fail(states[loop[0]].line, f"状态 {shown} 是走不出去的循环 / states {shown} loop with no way "
                        f"out: the call can never end",
                        "give one of them an exit (an edge to a queue or hangup state, or a transfer)")

    def check_prompts(self, states: dict[str, State], prompts: dict[str, Prompt]) -> None:
        for s in states.values():
            for key in ("prompt", "retry_prompt"):
                names = getattr(s, key, ())
                for p in (names,) if isinstance(names, str) else names:
                    if p and p not in prompts:
                        raise self.fail(self.at("states", s.name, key), f"状态 {s.name} 的提示音 {p!r} 不在 [prompts] "
                                        f"里 / prompt {p!r} is not in [prompts]",
                                        _join(_did_you_mean(p, prompts),
                                              f'or add {p} = "……" under [prompts]'))

    def check_choice(self, states: dict[str, State]) -> None:
        offered = {s.offer_next for s in states.values() if isinstance(s, Collect) and s.offer_next}
        for s in states.values():
            if isinstance(s, Transfer) and s.target == "choice" and s.name not in offered:
                raise self.fail(self.at("states", s.name, "target"), f'状态 {s.name} 转接 "choice"，但没有 offer '
                                f'通向它 / target = "choice" but no offer_next leads to {s.name}, so there is '
                                f"no choice to transfer to",
                                f'set offer_next = "{s.name}" in a collect with offer = "targets", or name a '
                                f"target id")

    def offer_fragments(self, states: dict[str, State], names: dict[str, str]) -> dict[str, Prompt]:
        out: dict[str, Prompt] = {}
        offered = [t for t in self.targets if t not in NEVER_OFFERED]
        for s in states.values():
            if not isinstance(s, Collect) or s.offer != "targets":
                continue
            intro_line = self.at("states", s.name, "offer_intro")
            key_line = self.at("states", s.name, "offer_key")
            for t in offered:
                n = Flow.offer_fragment(s.name, t)
                out[n] = Prompt(name=n, text=s.offer_intro.format(name=names[t], number=t), line=intro_line)
                for key in s.offer_keys():
                    n = Flow.offer_fragment(s.name, t, key)
                    out[n] = Prompt(name=n, text=s.offer_key.format(key=key, name=names[t], number=t),
                                    line=key_line)
        return out


def _offer_fix(key: str, state: str) -> str:
    return {"offer_intro": 'add offer_intro = "您反映的问题由{name}受理。"',
            "offer_key": 'add offer_key = "按{key}转接{name}，"',
            "offer_next": f'add offer_next = "TRANSFER_STATE" (a transfer with target = "choice") '
                          f"to [states.{state}]"}[key]


def _reach(start: str, successors: Callable[[str], Iterable[str]]) -> set[str]:
    seen = {start}
    todo = deque([start])
    while todo:
        for t in successors(todo.popleft()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


# -- line numbers -------------------------------------------------------------------------------


class _Locator:
    """Where each table and key of a (valid) TOML text is: ``line_of(("states", "a", "next"))``.

    tomllib gives no positions, so this walks the text once: table headers, ``key = value`` lines
    (dotted keys too) and the keys of inline tables, skipping strings and comments. A key it cannot
    place gets the line of the nearest enclosing table it can (and line 1 at worst)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.lines: dict[tuple[str, ...], int] = {}
        self._newlines = [k for k, c in enumerate(text) if c == "\n"]
        try:
            self._document()
        except (_Stop, IndexError, ValueError):
            pass  # best effort: what was placed so far stays

    def line_of(self, keys: tuple[str, ...]) -> int:
        while keys:
            if keys in self.lines:
                return self.lines[keys]
            keys = keys[:-1]
        return 1

    def _record(self, keys: tuple[str, ...], pos: int, base: int = 0) -> None:
        line = bisect_left(self._newlines, pos) + 1
        for n in range(max(base, 1), len(keys) + 1):
            self.lines.setdefault(keys[:n], line)

    # -- the walk -------------------------------------------------------------------------------
    def _peek(self, s: str) -> bool:
        return self.text.startswith(s, self.i)

    def _expect(self, s: str) -> None:
        if not self._peek(s):
            raise _Stop
        self.i += len(s)

    def _blank(self, newlines: bool) -> None:
        t, n = self.text, len(self.text)
        while self.i < n:
            c = t[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#":
                while self.i < n and t[self.i] != "\n":
                    self.i += 1
            else:
                return

    def _document(self) -> None:
        table: tuple[str, ...] = ()
        while True:
            self._blank(newlines=True)
            if self.i >= len(self.text):
                return
            start = self.i
            if self._peek("[[") or self._peek("["):
                close = "]]" if self._peek("[[") else "]"
                self.i += len(close)
                self._blank(False)
                table = self._key()
                self._blank(False)
                self._expect(close)
                self._record(table, start)
            else:
                keys = table + self._key()
                self._record(keys, start, base=len(table) + 1)
                self._blank(False)
                self._expect("=")
                self._value(keys)

    def _key(self) -> tuple[str, ...]:
        parts = [self._simple_key()]
        self._blank(False)
        while self._peek("."):
            self.i += 1
            self._blank(False)
            parts.append(self._simple_key())
            self._blank(False)
        return tuple(parts)

    def _simple_key(self) -> str:
        t = self.text
        if self._peek('"'):
            start = self.i
            self._basic_string()
            return tomllib.loads("k = " + t[start:self.i])["k"]
        if self._peek("'"):
            end = t.index("'", self.i + 1)
            key = t[self.i + 1:end]
            self.i = end + 1
            return key
        m = re.compile(r"[A-Za-z0-9_-]+").match(t, self.i)
        if not m:
            raise _Stop
        self.i = m.end()
        return m.group()

    def _basic_string(self) -> None:
        t = self.text
        self.i += 1
        while t[self.i] != '"':
            self.i += 2 if t[self.i] == "\\" else 1
        self.i += 1

    def _value(self, keys: tuple[str, ...]) -> None:
        self._blank(False)
        t = self.text
        if self._peek('"""'):
            self.i += 3
            while not self._peek('"""'):
                self.i += 2 if t[self.i] == "\\" else 1
            self.i += 3
            while self._peek('"'):
                self.i += 1
        elif self._peek("'''"):
            self.i = t.index("'''", self.i + 3) + 3
            while self._peek("'"):
                self.i += 1
        elif self._peek('"'):
            self._basic_string()
        elif self._peek("'"):
            self.i = t.index("'", self.i + 1) + 1
        elif self._peek("["):
            self.i += 1
            while True:
                self._blank(True)
                if self._peek("]"):
                    self.i += 1
                    return
                self._value(keys)
                self._blank(True)
                if self._peek(","):
                    self.i += 1
        elif self._peek("{"):
            self.i += 1
            while True:
                self._blank(False)
                if self._peek("}"):
                    self.i += 1
                    return
                start = self.i
                inner = keys + self._key()
                self._record(inner, start, base=len(keys) + 1)
                self._blank(False)
                self._expect("=")
                self._value(inner)
                self._blank(False)
                if self._peek(","):
                    self.i += 1
        else:
            m = re.compile(r"[^,\]}\r\n#]+").match(t, self.i)
            if not m:
                raise _Stop
            self.i = m.end()


class _Stop(Exception):
    """The locator met something it does not follow; it keeps what it placed."""
