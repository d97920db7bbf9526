"""Who may import whom: the rules of the layout, read from every module's imports (top level or not).

- A stage package (``stages/receiver``, ``stages/aggregator``, ``stages/forwarder``) imports no other
  stage package and nothing of the ``pystatsd`` command (``stages/control``): any stage is swapped or
  restarted alone.
- A shared module (``stages/common``, ``stages/rundir``, ``stages/listeners``) imports neither a stage
  package nor the command.
- The client library (``pystatsd/``) needs the standard library and itself alone: an application
  takes it without the daemon's dependencies (an optional feature may try another, and say what is
  missing when it is).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGE_PACKAGES = ("receiver", "aggregator", "forwarder")
#: The ``pystatsd`` command: it drives the stages (and so may read them); nothing runs inside it.
COMMAND = "stages.control"


def imports(path: Path, optional_too: bool = True) -> set[str]:
    """Every module ``path`` imports; without those a ``try: ... except ImportError`` guards
    unless ``optional_too``."""
    tree = ast.parse(path.read_text(), str(path))
    optional = set() if optional_too else {
        id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers)
        for stmt in node.body for inner in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def stage_of(name: str) -> str | None:
    return next((s for s in STAGE_PACKAGES if under(name, f"stages.{s}")), None)


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def broken_rules(path: Path) -> list[str]:
    me = module_name(path)
    mine = stage_of(me)
    broken = []
    for name in sorted(imports(path)):
        other = stage_of(name)
        if other is not None and other != mine:
            broken.append(f"{me} imports {name}: another stage's" if mine else f"{me} imports {name}: a stage's")
        if under(name, COMMAND):
            broken.append(f"{me} imports {name}: the command's")
    return broken


@pytest.mark.parametrize("path", [p for p in modules("stages") if not under(module_name(p), COMMAND)],
                         ids=module_name)
def test_stages_and_shared_modules_keep_to_their_own(path: Path) -> None:
    assert broken_rules(path) == []


@pytest.mark.parametrize("path", modules("pystatsd"), ids=module_name)
def test_the_client_library_needs_the_standard_library_alone(path: Path) -> None:
    outside = sorted(name for name in imports(path, optional_too=False)
                     if name.split(".")[0] not in sys.stdlib_module_names and not under(name, "pystatsd"))
    assert outside == []


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    # The checks above pass on an empty tree too: these show they would see each kind of import.
    shard = ROOT / "stages" / "aggregator" / "example.py"
    assert stage_of(module_name(shard)) == "aggregator"
    assert stage_of("stages.forwarder.sinks") == "forwarder"
    assert stage_of("stages.forwarders") is None
    assert {"stages.forwarder.sinks", "stages.forwarder.sinks.load_sink_configs", "stages.control.status"} <= imports(
        write(tmp_path / "x.py", "def f():\n    from stages.forwarder.sinks import load_sink_configs\n"
                                 "import stages.control.status\n"))
    guarded = write(tmp_path / "y.py", "import zmq\ntry:\n    import yaml\nexcept ImportError:\n    yaml = None\n")
    assert (imports(guarded), imports(guarded, optional_too=False)) == ({"zmq", "yaml"}, {"zmq"})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
