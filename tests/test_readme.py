"""The README's configuration example is a real configuration: it loads, with every key known."""

from __future__ import annotations

import re
from pathlib import Path

from fenliu.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_configuration_example_loads(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## 配置"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    cfg = tmp_path / "readme.toml"
    cfg.write_text(block.group(1), encoding="utf-8")
    s = load_settings(cfg, env={})
    assert s.platforms["yichang-12345"].fields["gdbh"] == "{order_no}"
    assert s.sites["xiling"].platforms["*"] == "yichang-12345"
    assert s.transfer.links["fire"] == "119" and s.followup.window_days == 7.0
