import pytest

from fenliu.errors import ConfigError
from fenliu.settings import load_settings


def test_defaults_are_embedded_and_valid():
    s = load_settings(env={})
    assert s.asr.model == "vosk-model-small-cn-0.22"
    assert s.store.url.startswith("sqlite:///")
    assert s.sip.address == "127.0.0.1" and s.console.host == "127.0.0.1"


def test_file_then_environment_overrides(tmp_path):
    f = tmp_path / "fenliu.toml"
    f.write_text('[asr]\nmodel = "/models/cn"\n[vad]\nstop_ms = 400\n', encoding="utf-8")
    s = load_settings(f, env={"FENLIU_VAD__STOP_MS": "500", "FENLIU_VAD__ENABLED": "false"})
    assert s.asr.model == "/models/cn"
    assert s.vad.stop_ms == 500 and s.vad.enabled is False


@pytest.mark.parametrize("toml,needle", [
    ('[asr]\nmodle = "x"\n', "asr.modle"),
    ('[vadd]\nstop_ms = 1\n', "[vadd]"),
    ('[vad]\nstop_ms = "long"\n', "vad.stop_ms"),
    ('[vad]\naggressiveness = 7\n', "vad.aggressiveness"),
    ('[vad]\nframe_ms = 25\n', "vad.frame_ms"),
    ('[asr]\nsample_rate = 44100\n', "asr.sample_rate"),
    ('[sip]\nport = 70000\n', "sip.port"),
    ('[store]\nurl = "mysql://x"\n', "store.url"),
    ('[asr\n', "syntax"),
])
def test_bad_settings_fail_naming_the_key(tmp_path, toml, needle):
    f = tmp_path / "bad.toml"
    f.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_settings(f, env={})
    assert needle in str(ei.value)


def test_unknown_key_suggests_the_right_one(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[asr]\nmodle = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="did you mean asr.model"):
        load_settings(f, env={})


def test_bad_environment_override():
    with pytest.raises(ConfigError, match="FENLIU_NOPE__X"):
        load_settings(env={"FENLIU_NOPE__X": "1"})
    with pytest.raises(ConfigError, match="vad.stop_ms"):
        load_settings(env={"FENLIU_VAD__STOP_MS": "soon"})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize("toml,needle", [
    ('[sip]\ntransports = ["udp", "sctp"]\n', "sip.transports"),
    ('[sip]\ntransports = [1, 2]\n', "must be a list of strings"),
    ('[sip]\ntransports = ["udp", "tls"]\n', "sip.tls_cert"),
    ('[sip]\ntransports = ["tls"]\ntls_cert = "/no/such.pem"\ntls_key = "/no/such.key"\n', "no such file"),
    ('[sip]\naddress = "::1"\n', "IPv6 is not available"),
    ('[sip]\nfront_timeout = 0\n', "sip.front_timeout"),
    ('[sip]\nmax_hold = -1\n', "sip.max_hold"),
    ('[transfer]\nmin_talk = -2\n', "transfer.min_talk"),
])
def test_pbx_settings_name_the_key_and_the_fix(tmp_path, toml, needle):
    f = tmp_path / "fenliu.toml"
    f.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_settings(f, env={})
    assert needle in str(e.value)


def test_transports_from_a_list_or_the_environment(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x"), key.write_text("x")
    f = tmp_path / "fenliu.toml"
    f.write_text(f'[sip]\ntransports = ["udp", "tcp", "tls"]\ntls_cert = "{cert}"\ntls_key = "{key}"\n', encoding="utf-8")
    assert load_settings(f, env={}).sip.transports == ("udp", "tcp", "tls")
    assert load_settings(env={"FENLIU_SIP__TRANSPORTS": "udp,tcp"}).sip.transports == ("udp", "tcp")


def test_target_names_come_from_one_table_with_the_shipped_ones_filling_in(tmp_path):
    from fenliu.settings import target_label

    cfg = tmp_path / "fenliu.toml"
    cfg.write_text('[transfer.names]\nsocial = "社会服务联动中心"\n"12399" = "12399 本地服务热线"\n', encoding="utf-8")
    s = load_settings(cfg, env={})
    assert target_label(s.transfer, "social") == ("", "社会服务联动中心")  # the centre's own name
    assert target_label(s.transfer, "12399") == ("12399", "本地服务热线")
    assert target_label(s.transfer, "12345") == ("12345", "政务服务便民热线")  # not named there: the shipped name
    assert target_label(s.transfer, "12366") == ("12366", "")  # named nowhere: the number only, never twice
    assert target_label(s.transfer, "lock") == ("", "lock")
    bad = tmp_path / "bad.toml"
    bad.write_text('[transfer.names]\nsocial = ""\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="transfer.names.social"):
        load_settings(bad, env={})
