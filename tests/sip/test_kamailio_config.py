"""The generated Kamailio front configuration and its inputs (fast; `kamailio -c` when installed)."""

import os
import shutil
import subprocess

import pytest

from fenliu.errors import ConfigError, FenliuError
from fenliu.settings import load_settings
from fenliu.sip.front.kamailio import check_fallback, parse_workers, render_config

KAMAILIO = shutil.which("kamailio") or ("/usr/sbin/kamailio" if os.path.exists("/usr/sbin/kamailio") else None)


def test_instances_expand_to_every_workers_address():
    assert parse_workers("10.0.0.11:5060-5061, 10.0.0.12:5070") == [
        ("10.0.0.11", 5060), ("10.0.0.11", 5061), ("10.0.0.12", 5070)]
    for bad in ("", "10.0.0.11", "10.0.0.11:x", "10.0.0.11:5061-5060", ":5060", "h:1-900"):
        with pytest.raises(FenliuError):
            parse_workers(bad)


def test_a_fallback_uri_cannot_break_out_of_the_config():
    assert check_fallback("sip:acd@10.0.0.5:5060;transport=udp") == "sip:acd@10.0.0.5:5060;transport=udp"
    assert check_fallback("") == ""
    for bad in ('sip:a"; exit; "', "sip:a\nb", "tel:110", "acd@pbx"):
        with pytest.raises(FenliuError):
            check_fallback(bad)


def test_fallback_setting_is_validated():
    assert load_settings(env={"FENLIU_SIP__FALLBACK_URI": "sip:acd@pbx:5060"}).sip.fallback_uri == "sip:acd@pbx:5060"
    assert load_settings(env={}).sip.fallback_uri == ""
    with pytest.raises(ConfigError, match="sip.fallback_uri"):
        load_settings(env={"FENLIU_SIP__FALLBACK_URI": "acd@pbx"})


@pytest.mark.parametrize("fallback", ["", "sip:acd@127.0.0.1:5099"])
def test_config_fails_open_only_with_a_fallback_and_kamailio_accepts_it(tmp_path, fallback):
    lst = tmp_path / "dispatcher.list"
    lst.write_text("1 sip:127.0.0.1:5070 8\n", encoding="utf-8")
    cfg = render_config("127.0.0.1", 5060, str(lst), "/nonexistent", fallback)
    assert 'modparam("tm", "fr_timer", 1500)' in cfg and 'ds_probing_mode", 1)' in cfg
    if fallback:
        assert f'$ru = "{fallback}"' in cfg and "X-Fenliu-Failopen: workers unavailable" in cfg
        assert 'sl_send_reply("503"' not in cfg
    else:
        assert "X-Fenliu-Failopen" not in cfg and 'sl_send_reply("503", "No fenliu worker available")' in cfg
    if KAMAILIO:
        from fenliu.sip.front.kamailio import module_dir

        path = tmp_path / "k.cfg"
        path.write_text(cfg.replace('mpath="/nonexistent"', f'mpath="{module_dir()}"'), encoding="utf-8")
        check = subprocess.run([KAMAILIO, "-c", "-f", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr[-1500:]
