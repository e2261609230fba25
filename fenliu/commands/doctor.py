"""`fenliu doctor`: check what the configured features need and say how to fix what is missing."""

from __future__ import annotations

import functools
import importlib
import shutil
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fenliu.errors import FenliuError
from fenliu.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


PY_MODULES = [
    ("vosk", "vosk", "ASR"),
    ("webrtcvad", "webrtcvad-wheels", "VAD"),
    ("jieba", "jieba", "router segmentation"),
    ("pypinyin", "pypinyin", "homophone matching"),
    ("opencc", "opencc", "traditional->simplified"),
    ("soundfile", "soundfile", "WAV input"),
    ("soxr", "soxr", "resampling"),
    ("aiohttp", "aiohttp", "console/API"),
    ("pjsua2", "pjsua2-python", "live SIP calls"),
]
TOOLS = [
    ("espeak-ng", "espeak-ng", "IVR prompts from Chinese text, regenerating audio fixtures", False),
    ("dot", "graphviz", "fenliu flow graph pictures", False),
    ("sox", "sox", "audio conversion for fixtures and SIPp", False),
    ("sipp", "sip-tester", "SIP test calls (SIPp)", False),
    ("kamailio", "kamailio", "single trunk address (sip.front_port)", False),
]


def run_checks(settings: Settings, load_model: bool = True) -> list[Check]:
    checks: list[Check] = []
    for mod, pkg, why in PY_MODULES:
        checks.append(_guard(f"python: {mod}", functools.partial(_import, mod), f"pip install '{pkg}' ({why})"))
    for tool, pkg, why, required in TOOLS:
        path = shutil.which(tool)
        checks.append(Check(f"tool: {tool}", path is not None, path or "not found",
                            f"apt-get install {pkg} ({why})", required))
    checks.append(_guard("negative list", lambda: _rules(settings),
                         "fix the file named in the error (fenliu rules check FILE)"))
    checks.append(_guard("router model (learned layer)", lambda: _router_model(settings),
                         "fenliu router-model build (or router.model = \"none\" for the rules alone)"))
    checks.append(_model_check(settings, load_model))
    checks.append(_port_check("SIP port", settings.sip.address, settings.sip.port, socket.SOCK_DGRAM, "sip.port"))
    checks.append(_port_check("console port", settings.console.host, settings.console.port, socket.SOCK_STREAM,
                              "console.port"))
    checks.append(_guard("store", lambda: _store(settings.store.url), "set store.url to a writable location"))
    if settings.ivr.flow:
        checks.append(_guard(f"IVR flow ({settings.ivr.flow})", lambda: _ivr(settings),
                             "fix what the error names (fenliu flow check), or set ivr.flow = \"\" to run without it"))
    return checks


def _ivr(settings: Settings) -> str:
    from fenliu.service.ivr import load

    loaded = load(settings)
    return (f"{loaded.flow.path}: {len(loaded.flow.states)} states, {len(loaded.prompts)} prompts ready in "
            f"{settings.ivr.cache_dir}; when {settings.ivr.when}, queue {settings.ivr.queue_uri or settings.sip.seat_uri}")


def _guard(name: str, fn: Callable[[], str], fix: str) -> Check:
    try:
        return Check(name, True, fn())
    except FenliuError as e:
        return Check(name, False, str(e), fix)
    except Exception as e:  # a check must report, never crash the doctor
        return Check(name, False, f"{type(e).__name__}: {e}", fix)


def _import(mod: str) -> str:
    m = importlib.import_module(mod)
    return getattr(m, "__version__", "") or "ok"


def _rules(settings: Settings) -> str:
    from fenliu.router import load_rules

    r = load_rules(settings.router.rules_path or None)
    return f"{r.source} version {r.version}: {len(r.categories)} categories, {len(r.danger)} danger groups"


def _router_model(settings: Settings) -> str:
    if settings.router.model == "none":
        return "off (router.model = none): the rules decide alone"
    from fenliu.router.model import load_model

    m = load_model(None if settings.router.model == "default" else settings.router.model)
    return f"{m.source} version {m.version}, {len(m.index)} features"


def _model_check(settings: Settings, load: bool) -> Check:
    from fenliu.asr.models import HOW_TO_GET, resolve_model

    name = f"ASR model ({settings.asr.model})"
    try:
        path = resolve_model(settings.asr.model, settings.asr.model_dir or None)
        if load:
            from fenliu.asr.engine import VoskEngine

            VoskEngine(path, settings.asr.sample_rate)
        return Check(name, True, f"{path}{' (loaded)' if load else ''}")
    except FenliuError as e:
        return Check(name, False, str(e).replace(HOW_TO_GET, "").strip(), HOW_TO_GET)


def _port_check(name: str, host: str, port: int, kind: int, key: str) -> Check:
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind((host, port))
        return Check(f"{name} {host}:{port}", True, "free")
    except OSError as e:
        return Check(f"{name} {host}:{port}", False, f"cannot bind: {e.strerror}",
                     f"stop what uses it, or set {key} to a free port")
    finally:
        s.close()


def _store(url: str) -> str:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path)
        try:
            con.execute("CREATE TABLE IF NOT EXISTS fenliu_doctor (t TEXT)")
            con.execute("DROP TABLE fenliu_doctor")
            con.commit()
        finally:
            con.close()
        return f"{path} writable"
    from fenliu.store.db import Database, redact
    from fenliu.store.schema import SCHEMA_VERSION

    db = Database(url)  # a ConfigError says why it cannot connect
    try:
        version = db.version()
    finally:
        db.close()
    if version > SCHEMA_VERSION:
        raise FenliuError(f"{redact(url)}: schema {version} is newer than this fenliu ({SCHEMA_VERSION})")
    note = "up to date" if version == SCHEMA_VERSION else "run `fenliu db upgrade` (or start serve once)"
    return f"{redact(url)} reachable, schema {version}/{SCHEMA_VERSION} ({note})"


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        mark = "✔" if c.ok else ("✘" if c.required else "!")
        line = f"{mark} {c.name}: {c.detail}"
        if not c.ok and c.fix:
            line += f"\n    → 修复 fix: {c.fix}"
        lines.append(line)
    bad = [c for c in checks if not c.ok and c.required]
    lines.append("全部通过 / all required checks passed" if not bad
                 else f"{len(bad)} 项未通过 / {len(bad)} required check(s) failed")
    return "\n".join(lines)
