"""Draw a flow: Graphviz DOT text, or an SVG/PNG/PDF made with the ``dot`` program."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from fenliu.errors import FenliuError
from fenliu.ivr_flows.flow import Branch, Collect, Decide, Flow, Sms, State

FONT = "Noto Sans CJK SC,WenQuanYi Zen Hei,sans-serif"  # any CJK font Graphviz finds; harmless if absent
ABBREV = 20  # characters of a prompt's text shown in a node
FORMATS = ("svg", "png", "pdf")


class GraphError(FenliuError):
    """A flow graph could not be written."""


def _q(text: str) -> str:
    """A DOT quoted string (quotes and backslashes escaped, newlines as line breaks)."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")
    return f'"{body}"'


def _abbrev(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ABBREV else text[: ABBREV - 1] + "…"


def _text(flow: Flow, state: State) -> str:
    """What the caller hears first in this state, if it is text."""
    if isinstance(state, Sms):
        return state.text
    if isinstance(state, Collect) and state.offer_intro:
        return state.offer_intro
    for name in state.prompts():
        p = flow.prompts.get(name)
        if p and p.text:
            return p.text
    return ""


def _shape(flow: Flow, state: State) -> dict[str, str]:
    attrs = {"shape": "box", "style": "rounded"}
    if isinstance(state, Decide | Branch):
        attrs = {"shape": "diamond", "style": "solid"}
    elif state.terminal:
        attrs = {"shape": "doubleoctagon", "style": "solid"}
    if state.name == flow.start:
        attrs["style"] += ",bold"
        attrs["penwidth"] = "2.5"
    return attrs


def to_dot(flow: Flow) -> str:
    """The flow as a Graphviz digraph: a node per state, an edge per transition, labelled."""
    out = [f"digraph {_q(flow.name)} {{",
           f"  graph [fontname={_q(FONT)}, label={_q(flow.name + (': ' + flow.description if flow.description else ''))},"
           f" labelloc=t, rankdir=TB];",
           f"  node [fontname={_q(FONT)}];",
           f"  edge [fontname={_q(FONT)}, fontsize=10];",
           '  "__start__" [shape=point, width=0.15, label=""];',
           f'  "__start__" -> {_q(flow.start)};']
    for s in flow.states.values():
        label = f"{s.name}\n({s.kind})"
        text = _text(flow, s)
        if text:
            label += "\n" + _abbrev(text)
        attrs = {"label": label, **_shape(flow, s)}
        out.append(f"  {_q(s.name)} [" + ", ".join(f"{k}={_q(v)}" for k, v in attrs.items()) + "];")
    for s in flow.states.values():
        for label, target in s.edges():
            out.append(f"  {_q(s.name)} -> {_q(target)} [label={_q(label)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def render(flow: Flow, out: str | Path) -> Path:
    """Write the flow's graph: ``.dot`` as text, ``.svg``/``.png``/``.pdf`` with Graphviz ``dot``."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt != "dot" and fmt not in FORMATS:
        raise GraphError(f"无法输出 {out.name} / cannot write {out.suffix or 'a file without a suffix'}: "
                         f"name the output .dot, .svg, .png or .pdf")
    dot_text = to_dot(flow)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        out.write_text(dot_text, encoding="utf-8")
        return out
    dot = shutil.which("dot")
    if dot is None:
        raise GraphError(f"找不到 Graphviz 的 dot 程序 / Graphviz 'dot' is not installed, so {out.name} cannot "
                         f"be drawn: install it (apt-get install graphviz) or write {out.with_suffix('.dot').name} "
                         f"instead")
    try:
        proc = subprocess.run([dot, f"-T{fmt}", "-o", str(out)], input=dot_text.encode("utf-8"),
                              capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as e:
        raise GraphError(f"dot took too long to draw {out.name}; write a .dot file instead") from e
    if proc.returncode != 0 or not out.is_file():
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise GraphError(f"dot failed to draw {out} (exit {proc.returncode}): {err[-500:]}; "
                         f"write a .dot file instead to inspect the graph")
    return out
