"""The layering the project promises, checked on the source with an ``ast`` walk (function-local imports count):

- ``distiller_nlp.core`` stands alone: the standard library, torch, accelerate, numpy and PyYAML (plus tqdm and
  safetensors, which accelerate itself installs and the engine uses for its progress bar and best-model weights,
  and huggingface_hub, an accelerate dependency too, for model cards);
- ``vision_kd`` imports nothing of ours but ``distiller_nlp.core``;
- ``distiller_nlp`` never imports ``autodistil`` or ``vision_kd``;
- ``autodistil`` imports ``distiller_nlp.core`` and the public names of ``distiller_nlp.tasks``, ``.models``, ``.env``;
- no private name (``_x``) is imported from another package;
- no import cycle between modules.
"""

from __future__ import annotations

import ast
import os
import sys
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("distiller_nlp", "autodistil", "vision_kd")
CORE = "distiller_nlp.core"
CORE_THIRD_PARTY = {"torch", "accelerate", "numpy", "yaml", "tqdm", "safetensors", "huggingface_hub"}
AUTODISTIL_MAY_USE = ("distiller_nlp.core", "distiller_nlp.tasks", "distiller_nlp.models", "distiller_nlp.env")


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for dp, dns, fns in os.walk(os.path.join(ROOT, pkg)):
            dns[:] = [d for d in dns if d != "__pycache__"]
            for fn in fns:
                if fn.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dp, fn), ROOT)[:-3].replace(os.sep, ".")
                    out[rel.removesuffix(".__init__")] = os.path.join(dp, fn)
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, "").endswith("__init__.py")


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` of every import in module ``name`` (any depth)."""
    tree = ast.parse(open(MODULES[name], encoding="utf-8").read())
    skip = {id(n) for block in ast.walk(tree) if _type_checking_block(block) for n in ast.walk(block)}
    base = name if _is_package(name) else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{parent}.{node.module}" if node.module else parent
            else:
                module = node.module
            out.append((module, [a.name for a in node.names], node.lineno))
    return out


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _targets(module: str, names: list[str]) -> list[str]:
    """Our modules an import statement loads: the module (or a submodule named in ``names``)."""
    out = []
    if module in MODULES:
        out.append(module)
    for n in names:
        if f"{module}.{n}" in MODULES:
            out.append(f"{module}.{n}")
    return out


def _violations(rule) -> list[str]:
    bad = []
    for name in sorted(MODULES):
        for module, names, line in _imports(name):
            problem = rule(name, module, names)
            if problem:
                bad.append(f"{MODULES[name][len(ROOT) + 1:]}:{line}: {problem}")
    return bad


def test_core_stands_alone():
    def rule(name, module, names):
        if not name.startswith(CORE):
            return None
        top = module.split(".")[0]
        if _ours(module):
            return None if module.startswith(CORE) else f"core imports {module}"
        if top in sys.stdlib_module_names or top in CORE_THIRD_PARTY:
            return None
        return f"core imports the third-party package {top}"

    assert _violations(rule) == []


def test_vision_kd_imports_only_core():
    def rule(name, module, names):
        if name.startswith("vision_kd") and _ours(module) and not module.startswith(("vision_kd", CORE)):
            return f"vision_kd imports {module}"
        return None

    assert _violations(rule) == []


def test_distiller_nlp_never_imports_the_other_products():
    def rule(name, module, names):
        if name.startswith("distiller_nlp") and module.split(".")[0] in ("autodistil", "vision_kd"):
            return f"distiller_nlp imports {module}"
        return None

    assert _violations(rule) == []


def test_autodistil_uses_core_and_public_nlp_names():
    def rule(name, module, names):
        if name.startswith("autodistil") and module.startswith("distiller_nlp"):
            if module != "distiller_nlp" and not module.startswith(AUTODISTIL_MAY_USE):
                return f"autodistil imports {module}"
        return None

    assert _violations(rule) == []


def _package_of(module: str) -> str:
    return module if _is_package(module) else module.rsplit(".", 1)[0]


def test_no_private_name_crosses_a_package():
    def rule(name, module, names):
        if not _ours(module):
            return None
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private and not _package_of(module).startswith(_package_of(name)) and not _package_of(name).startswith(
                _package_of(module)):
            return f"private name {private[0]} imported from {module}"
        return None

    assert _violations(rule) == []


def _graph() -> dict[str, set]:
    graph = defaultdict(set)
    for name in MODULES:
        mine = set()
        parts = name.split(".")
        ancestors = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        for module, names, _ in _imports(name):
            if not _ours(module):
                continue
            for target in _targets(module, names):
                tparts = target.split(".")
                # importing a.b.c also runs the __init__ of a and a.b (not those this module is inside of)
                for i in range(1, len(tparts) + 1):
                    dep = ".".join(tparts[:i])
                    if dep in MODULES and dep not in ancestors and dep != name:
                        mine.add(dep)
        graph[name] = mine
    return graph


def _cycles(graph: dict[str, set]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("rule_test", [test_core_stands_alone, test_vision_kd_imports_only_core])
def test_the_rules_see_function_local_imports(rule_test, monkeypatch, tmp_path):
    """A rule must fail on a planted violation hidden inside a function (the walk covers every depth)."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from distiller_nlp.tasks import load_task_data\n    import transformers\n")
    name = "distiller_nlp.core.planted" if rule_test is test_core_stands_alone else "vision_kd.planted"
    monkeypatch.setitem(MODULES, name, str(planted))
    with pytest.raises(AssertionError):
        rule_test()
