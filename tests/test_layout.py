"""The layout stays as the README draws it: the import graph of ``fenliu`` (every import, also
the ones inside functions) has no cycle and no import that runs up a layer, domain packages use
only the packages the table below allows, no folder holds more than ~3,000 lines of Python in
its own files, and ``tests/`` mirrors the packages.

The layers, lowest first (a module may import its own layer's package and anything below):

    ground    fenliu (version), errors, events, settings — import nothing of fenliu but each other
    domain    router, asr, sip, ivr_flows, hotlines, bus, store — see DOMAIN_USES
    loop      outbox, follow-through, statistics, reports
    service   supervisor, wiring, the IVR desk, metrics
    console   web API, accounts and sessions, the event feed, the console's server
    commands  the CLI, doctor, demos, dial, classify, offline replay
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fenliu"
MAX_FOLDER_LINES = 3000

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("fenliu", "fenliu.errors", "fenliu.events", "fenliu.settings")),
    ("domain", ("fenliu.router", "fenliu.asr", "fenliu.sip", "fenliu.ivr_flows", "fenliu.hotlines", "fenliu.bus",
                "fenliu.store")),
    ("loop", ("fenliu.loop",)),
    ("service", ("fenliu.service",)),
    ("console", ("fenliu.console",)),
    ("commands", ("fenliu.commands", "fenliu.__main__")),
]

# Which domain package may use which (besides the ground floor). Anything not listed is refused.
DOMAIN_USES: dict[str, set[str]] = {
    "fenliu.router": set(),  # pure text logic
    "fenliu.sip": set(),  # pjsua2 workers and the call-control protocol
    "fenliu.hotlines": set(),  # sites, targets, platforms, order and SMS texts, signatures
    "fenliu.asr": {"fenliu.router", "fenliu.sip"},  # the pipeline routes stable text; ASR processes speak the protocol
    "fenliu.ivr_flows": {"fenliu.asr"},  # prompts are read and resampled with asr.audio
    "fenliu.bus": {"fenliu.sip"},  # carries the protocol's facts
    "fenliu.store": {"fenliu.sip", "fenliu.hotlines", "fenliu.bus"},  # records the bus; writes orders with the transfer
}


def unit_of(module: str) -> str:
    """The layer unit a module belongs to (the longest unit name that prefixes it)."""
    best = ""
    for _, units in LAYERS:
        for u in units:
            if (module == u or module.startswith(u + ".")) and len(u) > len(best):
                best = u
    if not best:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS in tests/test_layout.py")
    return best


def layer_of(unit: str) -> int:
    return next(i for i, (_, units) in enumerate(LAYERS) if unit in units)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Every fenliu module ``path`` imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from fenliu.loop import stats" imports the module fenliu.loop.stats
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            if name == "fenliu" or name.startswith("fenliu."):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                out.add(name)
    out.discard(module)
    return out


def import_graph(root: Path = ROOT, package: str = "fenliu") -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    known = set(files)
    return {m: imports_of(p, m, known) for m, p in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, targets in sorted(graph.items()):
        um = unit_of(m)
        for t in sorted(targets):
            ut = unit_of(t)
            if ut == um:
                continue
            lm, lt = layer_of(um), layer_of(ut)
            if lt > lm:
                bad.append(f"{m} imports {t}: {LAYERS[lm][0]} must not reach up to {LAYERS[lt][0]}")
            elif lm == lt and LAYERS[lm][0] == "domain" and ut not in DOMAIN_USES[um]:
                bad.append(f"{m} imports {t}: {um} may use {sorted(DOMAIN_USES[um]) or 'no other domain package'}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def folder_lines(package_dir: Path = PACKAGE) -> dict[str, int]:
    out = {}
    for d in [package_dir, *sorted(p for p in package_dir.rglob("*") if p.is_dir())]:
        py = list(d.glob("*.py"))
        if py:
            out[str(d.relative_to(package_dir.parent))] = sum(len(p.read_text(encoding="utf-8").splitlines())
                                                              for p in py)
    return out


# -- the checks ---------------------------------------------------------------------------------


def test_no_import_runs_up_a_layer():
    bad = upward_imports(import_graph())
    assert not bad, "imports against the layer order:\n  " + "\n  ".join(bad)


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n  " + "\n  ".join(" ⇄ ".join(c) for c in found)


def test_every_module_is_in_a_layer():
    for m in import_graph():
        unit_of(m)


def test_no_folder_over_3000_lines():
    big = {d: n for d, n in folder_lines().items() if n > MAX_FOLDER_LINES}
    assert not big, f"split these folders into sub-packages by concern: {big}"


def test_each_package_says_what_it_holds_and_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert doc, f"{init.relative_to(ROOT)}: say in two lines what the package holds and what it may import"
        assert "import" in doc, f"{init.relative_to(ROOT)}: the docstring should say what the package may import"


def test_tests_mirror_the_packages():
    packages = {p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("__init__.py")} - {"."}
    test_dirs = {p.relative_to(ROOT / "tests").as_posix() for p in (ROOT / "tests").rglob("*")
                 if p.is_dir() and any(p.glob("test_*.py"))}
    assert test_dirs - {"."} <= packages, f"test folders without a package: {sorted(test_dirs - packages - {'.'})}"
    top = {p for p in packages if "/" not in p}
    assert top <= test_dirs, f"packages without tests/<package>/: {sorted(top - test_dirs)}"


# -- the checker can fail ------------------------------------------------------------------------


def write(root: Path, rel: str, text: str = "") -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def test_the_checker_sees_lazy_upward_imports_and_cycles(tmp_path):
    write(tmp_path, "fenliu/__init__.py")
    write(tmp_path, "fenliu/errors.py")
    write(tmp_path, "fenliu/asr/__init__.py")
    write(tmp_path, "fenliu/asr/service.py", "def f():\n    from fenliu.service import wiring\n")
    write(tmp_path, "fenliu/service/__init__.py")
    write(tmp_path, "fenliu/service/wiring.py", "from . import bus\n")
    write(tmp_path, "fenliu/service/bus.py", "from fenliu.service.wiring import x\n")
    write(tmp_path, "fenliu/router/__init__.py", "import fenliu.sip\n")
    write(tmp_path, "fenliu/sip/__init__.py", "from fenliu.errors import E\n")
    graph = import_graph(tmp_path)
    assert graph["fenliu.asr.service"] == {"fenliu.service.wiring"}
    bad = upward_imports(graph)
    assert any(b.startswith("fenliu.asr.service imports fenliu.service.wiring") for b in bad)
    assert any("fenliu.router imports fenliu.sip" in b for b in bad)  # a domain use the table does not allow
    assert not any(b.startswith("fenliu.sip ") for b in bad)  # ground is always allowed
    assert cycles(graph) == [["fenliu.service.bus", "fenliu.service.wiring"]]
