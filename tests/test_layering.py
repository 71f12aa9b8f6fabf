"""The package layering (shared DESIGN.md §1) and the absence of import cycles.

Every ``import`` statement of the project's modules, at the top of a module or inside a
function, is read with :mod:`ast` (nothing is imported), and each module is given the
layer of the longest prefix in :data:`LAYERS`. A module may import its own layer and the
layers below it, never one above: the envs and reward terms reach the learned models and
trained agents only by name (``rewards.LAZY_TERMS``, ``musicenv.compose`` entry points,
``musicenv.envs.jam.RUN_LOADER``), imported on first use. The same graph must have no
cycle, lazy imports included.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("musicenv", "rewards", "agents", "experiments")

#: Bottom to top; a module's layer is that of its longest matching prefix (a prefix
#: matches itself and its submodules). ``agents`` itself (an empty package) is in the
#: model layer, every other ``agents`` module not in ``agents.models`` in training.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("musicenv", "musicenv.theory", "musicenv.encoding", "musicenv.core", "musicenv.files",
              "musicenv._numba_cache", "musicenv.composition", "musicenv.render", "musicenv.audio",
              "musicenv.progress", "musicenv.corpus", "musicenv.melodies", "musicenv.baselines")),
    ("rewards", ("rewards",)),
    ("analysis", ("musicenv.metrics", "musicenv.style")),
    ("models", ("=agents", "agents.models")),
    ("envs", ("musicenv.envs", "musicenv.jam", "musicenv.jam_v0", "musicenv.compose")),
    ("training", ("agents",)),
    ("apps", ("musicenv.cli", "musicenv.study", "experiments")),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
#: Third-party packages and the lowest layer that may import them.
THIRD_PARTY_FLOOR = {"torch": "models", "stable_baselines3": "training", "sb3_contrib": "training"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> str:
    best, best_len = None, -1
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            exact = prefix.startswith("=")
            prefix = prefix.lstrip("=")
            hit = module == prefix if exact else (module == prefix or module.startswith(prefix + "."))
            if hit and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of LAYERS; add it")
    return best


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str) -> list[tuple[str, int]]:
    """``(imported module, line)`` of every import statement in ``module`` (a project
    module where the name is one, else the name as written)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:  # ``if TYPE_CHECKING:`` imports never run
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # ``from package import submodule`` imports the submodule
                sub = f"{target}.{alias.name}"
                out.append((sub if sub in MODULES else target, node.lineno))
    return out


def project_graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in imports_of(m) if t in MODULES and t != m} for m in MODULES}


def test_every_module_has_a_layer_and_the_layers_are_the_design():
    assert [name for name, _ in LAYERS] == ["core", "rewards", "analysis", "models", "envs", "training", "apps"]
    assert {layer_of(m) for m in MODULES} == set(RANK)
    assert layer_of("agents.models.prior") == "models" and layer_of("agents.train.run") == "training"
    assert layer_of("agents") == "models" and layer_of("musicenv.envs.batched") == "envs"


def test_no_module_imports_from_a_layer_above_it():
    violations = []
    for module in MODULES:
        mine = RANK[layer_of(module)]
        for target, line in imports_of(module):
            top = target.split(".")[0]
            if target in MODULES or top in PACKAGES:
                theirs = layer_of(target)
            elif top in THIRD_PARTY_FLOOR:
                theirs = THIRD_PARTY_FLOOR[top]
            else:
                continue
            if RANK[theirs] > mine:
                violations.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} ({layer_of(module)}) "
                                  f"imports {target} ({theirs})")
    assert not violations, "imports from a layer above:\n" + "\n".join(violations)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


#: The one cycle left is owned by issue 16 item 2 (one registration per numba term, the
#: fused dispatch derived from the registry): ``rewards.base`` binds the fused kernel of
#: ``rewards.kernels`` (lazily), which imports the term modules' kernels, which import
#: ``rewards.base``. It is tolerated only inside the ``rewards`` package and only through
#: ``rewards.kernels``; set this to False when that cycle is gone, to hold it at zero.
REWARDS_KERNEL_CYCLE_TOLERATED = True


def _tolerated(cycle: list[str]) -> bool:
    return (REWARDS_KERNEL_CYCLE_TOLERATED and "rewards.kernels" in cycle and "rewards.base" in cycle
            and all(m == "rewards" or m.startswith("rewards.") for m in cycle))


def test_no_import_cycle_among_the_project_modules():
    cycles = [c for c in _cycles(project_graph()) if not _tolerated(c)]
    assert not cycles, "import cycles (lazy imports included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_learned_terms_and_sources_are_reached_by_name_in_the_model_layer():
    import musicenv.compose as compose
    import rewards
    from musicenv.envs import jam

    learned = {name: rewards.LAZY_TERMS[name] for name in ("prior_log_likelihood", "discriminator")}
    assert all(entry.startswith("agents.models.") for entry in learned.values()), learned
    for entry in rewards.LAZY_TERMS.values():
        assert layer_of(entry.partition(":")[0]) in ("models", "apps"), entry  # models, or the study's preference
    entries = {name: info.factory for name, info in compose._SOURCES.items() if isinstance(info.factory, str)}
    assert layer_of(entries["prior"].partition(":")[0]) == layer_of(entries["gan"].partition(":")[0]) == "models"
    assert jam.RUN_LOADER.partition(":")[0] in MODULES


@pytest.mark.parametrize("package", ["musicenv", "rewards", "agents.models"])
def test_importing_the_lower_packages_imports_no_torch_and_no_sb3(package):
    import subprocess

    code = (f"import sys, {package}; bad = [m for m in ('torch', 'stable_baselines3', 'sb3_contrib') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stdout + done.stderr
