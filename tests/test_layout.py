"""Where code lives: every sampler is ``nas/train/samplers/<name>.py``, checkpoints are outside ``nas/train``, and the
training package has no import cycle (the trainer <-> distributed loop stays gone)."""

from __future__ import annotations

import ast
from pathlib import Path

from nas.train.samplers import SAMPLERS

REPO = Path(__file__).resolve().parents[1]


def _module_imports(path: Path, package: str) -> set[str]:
    """Modules imported at module level (not inside functions or ``if TYPE_CHECKING``), as dotted names."""
    imported: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else package.rsplit(".", node.level - 1)[0] + "." + node.module
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names)
    return imported


def _train_graph() -> dict[str, set[str]]:
    files = {".".join(p.relative_to(REPO).with_suffix("").parts): p for p in (REPO / "nas/train").rglob("*.py")}
    mods = {m.removesuffix(".__init__"): p for m, p in files.items()}
    return {m: {i for i in _module_imports(p, m) if i in mods and i != m} for m, p in mods.items()}


def test_nas_train_has_no_import_cycle():
    graph = _train_graph()
    assert "nas.train.trainer" not in graph["nas.train.distributed"]
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == "nas.train" or (nxt == "nas.train.samplers" and node.startswith("nas.train.samplers.")):
                continue  # a package's __init__ importing its own modules is not a loop between modules
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for mod in graph:
        if mod not in state:
            visit(mod, [])


def test_every_sampler_lives_in_its_own_module():
    leftovers = sorted(p.name for p in (REPO / "nas/train").glob("*.py")
                       if p.name.startswith("samplers_") or p.name.endswith("_core.py"))
    assert leftovers == []
    for name in SAMPLERS.names():
        module = SAMPLERS.get(name).__module__
        assert module.startswith("nas.train.samplers."), (name, module)
    modules = {SAMPLERS.get(n).__module__.rsplit(".", 1)[1] for n in SAMPLERS.names()}
    assert modules >= {"pada", "shiftnas", "sortednet", "fixed", "eqnet", "deps", "gmnas", "supertickets"}


def test_checkpoints_live_outside_training():
    assert not (REPO / "nas/train/checkpoint.py").exists()
    import nas.checkpoints
    import nas.train

    assert not hasattr(nas.train, "load_supernet")  # no re-export shim
    assert callable(nas.checkpoints.load_supernet)
