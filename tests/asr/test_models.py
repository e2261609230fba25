"""Model fetching against a real local HTTP server (Vosk's list + zip protocol)."""

import hashlib
import io
import json
import zipfile

import pytest

from fenliu.asr.models import fetch_model, resolve_model
from fenliu.errors import ModelError

NAME = "vosk-model-small-cn-0.22"


def model_zip(name: str = NAME) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{name}/am/final.mdl", b"\0" * 1000)
        z.writestr(f"{name}/conf/mfcc.conf", "--sample-frequency=16000\n")
        z.writestr(f"{name}/README", "test")
    return buf.getvalue()


def serve(http_server, data: bytes, md5: str | None = None):
    md5 = md5 or hashlib.md5(data).hexdigest()
    listing = [{"name": NAME, "md5": md5, "size": len(data), "lang": "cn"}]
    http_server.routes["/model-list.json"] = (200, json.dumps(listing).encode(), {})
    http_server.routes[f"/models/{NAME}.zip"] = (200, data, {"Content-Length": str(len(data))})
    return f"{http_server.url}/model-list.json", f"{http_server.url}/models/"


def test_fetch_by_alias_checks_md5_and_unpacks(http_server, tmp_path):
    list_url, base = serve(http_server, model_zip())
    path = fetch_model("small-cn", tmp_path, list_url=list_url, zip_base=base, progress=False)
    assert path == tmp_path / NAME
    assert (path / "am" / "final.mdl").exists()
    assert resolve_model(NAME, tmp_path) == path
    assert [r["path"] for r in http_server.requests] == ["/model-list.json", f"/models/{NAME}.zip"]
    # a second fetch finds it and downloads nothing
    fetch_model("small-cn", tmp_path, list_url=list_url, zip_base=base, progress=False)
    assert len(http_server.requests) == 2


def test_checksum_mismatch_leaves_nothing_behind(http_server, tmp_path):
    list_url, base = serve(http_server, model_zip(), md5="0" * 32)
    with pytest.raises(ModelError, match="checksum"):
        fetch_model("small-cn", tmp_path, list_url=list_url, zip_base=base, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_server_down_or_failing_gives_a_clear_error(http_server, tmp_path):
    list_url, base = serve(http_server, model_zip())
    http_server.fail_next[f"/models/{NAME}.zip"] = 1
    with pytest.raises(ModelError, match="download .* failed"):
        fetch_model("small-cn", tmp_path, list_url=list_url, zip_base=base, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="model list"):
        fetch_model("small-cn", tmp_path, list_url="http://127.0.0.1:9/none.json", zip_base=base, progress=False)


def test_unknown_model_name_and_bad_zip(http_server, tmp_path):
    list_url, base = serve(http_server, b"not a zip")
    with pytest.raises(ModelError, match="not in the model list"):
        fetch_model("vosk-model-xx-0.1", tmp_path, list_url=list_url, zip_base=base, progress=False)
    with pytest.raises(ModelError, match="not a valid zip"):
        fetch_model("small-cn", tmp_path, list_url=list_url, zip_base=base, progress=False)
