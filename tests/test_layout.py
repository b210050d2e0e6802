"""The house's shape, read from the code's own imports (every import, in functions too): no import
cycle among mfexp's modules, mlflow imported only by the tracking modules, optuna only under
mfexp/sweep/, and the data layer needing neither."""
import ast
from pathlib import Path

MFEXP = Path(__file__).resolve().parents[1] / "mfexp"
# where `import mlflow` may appear: the MLflow side of the house
MLFLOW_MODULES = {"mfexp.tracking", "mfexp.inputs", "mfexp.pyfunc", "mfexp.pyfunc_entry", "mfexp.registry",
                  "mfexp.scoring"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in MFEXP.rglob("*.py"):
        name = ".".join(path.relative_to(MFEXP.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every module name `path` imports, outside `if TYPE_CHECKING:` blocks (annotations only)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str):
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)

    return {m: {r for r in map(resolve, _imports(p)) if r and r != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

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
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_mfexps_modules():
    assert _cycles(_graph()) == []


def test_the_check_finds_a_cycle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_framework_is_imported_on_its_own_side():
    by_module = {m: _imports(p) for m, p in _modules().items()}
    mlflow = sorted(m for m, names in by_module.items() if any(n.split(".")[0] == "mlflow" for n in names))
    optuna = sorted(m for m, names in by_module.items() if any(n.split(".")[0] == "optuna" for n in names))
    assert set(mlflow) <= MLFLOW_MODULES, mlflow
    assert all(m.startswith("mfexp.sweep") for m in optuna), optuna
    data = [m for m in by_module if m.startswith("mfexp.data")]
    assert not [m for m in data if any(n.split(".")[0] in ("mlflow", "optuna", "mxnet") for n in by_module[m])]
