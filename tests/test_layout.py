"""The house's shape, read from the code's own imports (every import, in functions too): no import
cycle among mfexp's modules (package inits included), no import inside a function but an optional
extra's, mlflow imported only under mfexp/track/ (and by the served model), optuna only under
mfexp/sweep/, the data layer needing neither; and README's Layout naming every folder."""
import ast
import subprocess
from pathlib import Path

MFEXP = Path(__file__).resolve().parents[1] / "mfexp"
# where `import mlflow` may appear besides mfexp/track/: the served model (mfexp.pyfunc and its
# models-from-code entry), which every logged model names, so they stay where logged models find them
MLFLOW_MODULES = {"mfexp.pyfunc", "mfexp.pyfunc_entry"}


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

    def with_packages(name: str) -> set[str]:  # importing a.b.c first runs a/__init__ and a/b/__init__
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & set(modules)

    return {m: {p for r in map(resolve, _imports(path)) if r for p in with_packages(r)
                if p != m and not m.startswith(p + ".")} for m, path in modules.items()}


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


def _function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each import inside a function body (outside a try block's body, where an
    import guarded by its own message may sit)."""
    out = []

    def visit(node, in_function: bool):
        for field, value in ast.iter_fields(node):
            for child in value if isinstance(value, list) else [value]:
                if not isinstance(child, ast.AST):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    if in_function and not (isinstance(node, ast.Try) and field == "body"):
                        out.append((child.lineno, child.module if isinstance(child, ast.ImportFrom)
                                    else child.names[0].name))
                else:
                    visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return out


# imports that stay inside a function: optional extras, imported only where they are used
LATE_IMPORTS = {("mfexp.sweep.storage", "redis")}


def test_imports_sit_at_the_top_of_each_module_but_optional_extras():
    roots = [MFEXP, MFEXP.parent / "bench", MFEXP.parent / "ops"]
    late = [(f"{path.relative_to(MFEXP.parent)}:{line}", module) for root in roots for path in sorted(root.rglob("*.py"))
            for line, module in _function_imports(path)
            if (".".join(path.relative_to(MFEXP.parent).with_suffix("").parts), module) not in LATE_IMPORTS]
    assert late == []


def test_the_check_finds_a_cycle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_framework_is_imported_on_its_own_side():
    by_module = {m: _imports(p) for m, p in _modules().items()}
    mlflow = sorted(m for m, names in by_module.items() if any(n.split(".")[0] == "mlflow" for n in names))
    optuna = sorted(m for m, names in by_module.items() if any(n.split(".")[0] == "optuna" for n in names))
    assert {m for m in mlflow if not m.startswith("mfexp.track")} <= MLFLOW_MODULES, mlflow
    assert all(m.startswith("mfexp.sweep") for m in optuna), optuna
    data = [m for m in by_module if m.startswith("mfexp.data")]
    assert not [m for m in data if any(n.split(".")[0] in ("mlflow", "optuna", "mxnet") for n in by_module[m])]


def test_the_readmes_layout_names_every_folder_in_git_and_no_other():
    """README's Layout section has one line per folder that git holds files in (issue 27)."""
    root = MFEXP.parent
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    folders = {str(Path(f).parent) for f in files} - {"."}
    readme = (root / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = {line.split()[0].rstrip("/") for line in block.splitlines() if line and not line[0].isspace()}
    assert named == folders
