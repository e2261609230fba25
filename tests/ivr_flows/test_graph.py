"""Drawing a flow: DOT text, and a real SVG made by Graphviz."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from fenliu.ivr_flows.flow import load_flow, parse_flow
from fenliu.ivr_flows.graph import GraphError, render, to_dot

FLOWS = Path(__file__).parent / "flows"
TARGETS = ("police", "12345", "12348", "12328", "12338", "95598", "social", "119", "120", "122", "fraud")


@pytest.fixture
def flow():
    return load_flow(FLOWS / "good.toml", TARGETS)


def test_dot_has_every_state_and_labelled_edge(flow):
    dot = to_dot(flow)
    assert dot.startswith('digraph "test_desk" {') and dot.rstrip().endswith("}")
    for name, state in flow.states.items():
        assert re.search(rf'^  "{name}" \[label="{name}\\n\({state.kind}\)', dot, re.M), name
        for label, target in state.edges():
            assert f'  "{name}" -> "{target}" [label="{label}"];' in dot
    edges = sum(len(s.edges()) for s in flow.states.values())
    assert dot.count(" -> ") == edges + 1  # and the arrow into the start state
    assert '"__start__" -> "welcome"' in dot


def test_dot_shapes_text_and_fonts(flow):
    dot = to_dot(flow)
    lines = {m.group(1): m.group(0) for m in re.finditer(r'^  "([^"]+)" \[label=.*$', dot, re.M)}
    assert "bold" in lines["welcome"]
    assert "bold" not in lines["listen"]
    for n in ("decide", "by_target"):
        assert 'shape="diamond"' in lines[n]
    for n in ("queue", "urgent_queue", "bye"):
        assert 'shape="doubleoctagon"' in lines[n]
    assert 'shape="box"' in lines["transfer"]  # a transfer with next does not end the flow
    # Chinese text survives, abbreviated
    assert "这里是110报警服务台，请简要说明您的…" in lines["welcome"]
    assert "感谢来电，再见。" in lines["bye"]
    assert 'fontname="Noto Sans CJK SC,WenQuanYi Zen Hei,sans-serif"' in dot


def test_dot_escapes_quotes_and_backslashes():
    text = (FLOWS / "good.toml").read_text(encoding="utf-8")
    text = text.replace('prompt = ["hold", "sorry \\"quoted\\""]', 'prompt = ["sorry \\"quoted\\"", "hold"]')
    f = parse_flow(text, FLOWS / "good.toml", TARGETS)
    dot = to_dot(f)
    assert '反斜杠 \\\\ 和 \\"引号\\"' in dot


def test_render_dot(flow, tmp_path):
    out = render(flow, tmp_path / "sub" / "flow.dot")
    assert out == tmp_path / "sub" / "flow.dot"
    assert out.read_text(encoding="utf-8") == to_dot(flow)


def test_render_svg_with_graphviz(flow, tmp_path):
    assert shutil.which("dot"), "Graphviz is a test dependency: apt-get install graphviz (scripts/setup.sh)"
    out = render(flow, tmp_path / "flow.svg")
    svg = out.read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in flow.states:
        assert f">{name}</text>" in svg
    assert "感谢来电，再见。" in svg
    assert ">no_input</text>" in svg


def test_render_escaped_labels_are_valid_dot(tmp_path):
    text = (FLOWS / "good.toml").read_text(encoding="utf-8")
    text = text.replace('prompt = ["hold", "sorry \\"quoted\\""]', 'prompt = ["sorry \\"quoted\\"", "hold"]')
    f = parse_flow(text, FLOWS / "good.toml", TARGETS)
    svg = render(f, tmp_path / "q.svg").read_text(encoding="utf-8")
    assert "反斜杠 \\ 和 &quot;引号&quot;" in svg


def test_render_without_graphviz_says_what_to_do(flow, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GraphError, match="apt-get install graphviz") as ei:
        render(flow, tmp_path / "flow.svg")
    assert "flow.dot" in str(ei.value)
    assert not (tmp_path / "flow.svg").exists()


def test_render_unknown_format(flow, tmp_path):
    with pytest.raises(GraphError, match=r"\.dot, \.svg, \.png or \.pdf"):
        render(flow, tmp_path / "flow.jpg")
