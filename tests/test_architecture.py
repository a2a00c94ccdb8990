"""The package's shape, computed from the source with ``ast``: no import cycle (counting imports inside
functions), no stage importing a later stage, pure models, no Airflow, and function-local imports of
visrec's own modules only where they keep a heavy library out of an importer that must stay light."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "visrec"
HEAVY = ("tensorflow", "keras", "pyspark", "mlflow", "great_expectations")
# The data flow, in order: a module may import its own stage or an earlier one, never a later one.
STAGES = [
    (
        "visrec",
        "visrec.errors",
        "visrec.vocabulary",
        "visrec.logs",
        "visrec.settings",
        "visrec.store",
        "visrec.mlops",
        "visrec.models",
    ),
    ("visrec.devdata",),
    ("visrec.ingest",),
    ("visrec.vision",),
    ("visrec.recsys",),
    ("visrec.generation",),
    ("visrec.publish",),
    ("visrec.report",),
    ("visrec.forget",),
    ("visrec.pipeline",),
    ("visrec.api", "visrec.app", "visrec.__main__"),
]
# Entry points that must stay light (the scheduler imports the pipeline package each time it parses the
# DAG; `visrec --help` imports the CLI): each defers the modules behind it in one function-local import.
LAZY_BY_DESIGN = {"visrec.pipeline", "visrec.app.cli"}
MAX_LOCAL_IMPORTS = 25


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in ROOT.rglob("*.py")}


def _target(node: ast.ImportFrom | ast.Import, alias: ast.alias) -> str:
    if isinstance(node, ast.Import):
        return alias.name
    candidate = f"{node.module}.{alias.name}"
    return candidate if candidate in MODULES else node.module


def _imports(name: str) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for each import in ``name``'s source."""
    tree = ast.parse(MODULES[name].read_text())
    local = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and not (
            isinstance(node, ast.ImportFrom) and node.level
        ):
            for alias in node.names:
                if isinstance(node, ast.ImportFrom) and node.module is None:
                    continue
                out.append((_target(node, alias), id(node) in local, node.lineno))
    return out


GRAPH = {m: sorted({t for t, _, _ in _imports(m) if t in MODULES and t != m}) for m in MODULES}


def _stage(module: str) -> int:
    best = max(
        (len(prefix), rank)
        for rank, group in enumerate(STAGES)
        for prefix in group
        if module == prefix or module.startswith(prefix + ".")
    )
    return best[1]


def test_no_import_cycle():
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in GRAPH[module]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_stage_imports_a_later_stage():
    backwards = [f"{m} -> {t}" for m in GRAPH for t in GRAPH[m] if _stage(t) > _stage(m)]
    assert backwards == []


def test_models_are_pure_keras_and_visrec_never_imports_airflow():
    impure = [
        f"{m} -> {t}"
        for m in GRAPH
        if m.startswith("visrec.models")
        for t in GRAPH[m]
        if not t.startswith("visrec.models") and t != "visrec.deprecated"  # the old names' shim
    ]
    airflow = [m for m in MODULES for t, _, _ in _imports(m) if t == "airflow" or t.startswith("airflow.")]
    assert impure == [] and airflow == []


def _type_checking_lines(name: str) -> set[int]:
    """Lines of the imports under ``if TYPE_CHECKING:`` in ``name``: never run, so never heavy."""
    tree = ast.parse(MODULES[name].read_text())
    return {
        n.lineno
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
        if isinstance(n, ast.Import | ast.ImportFrom)
    }


@functools.cache
def _heavy(module: str) -> bool:
    """Whether importing ``module`` imports a heavy library (directly or through visrec modules; there
    is no import cycle, see above, so the recursion ends)."""
    typing_only = _type_checking_lines(module)
    for target, local, line in _imports(module):
        if local or line in typing_only:
            continue
        if target.split(".")[0] in HEAVY:
            return True
        if target in MODULES and target != module and _heavy(target):
            return True
    return False


@pytest.mark.parametrize("module", sorted(set(MODULES) - LAZY_BY_DESIGN))
def test_function_local_imports_of_visrec_only_keep_heavy_libraries_lazy(module):
    needless = [
        f"{MODULES[module].name}:{line} {t}"
        for t, local, line in _imports(module)
        if local and t in MODULES and not _heavy(t)
    ]
    assert needless == [], "import these at the top of the module: they are cheap"


def test_few_function_local_imports_of_visrec():
    """Imports sit at the top of a module; the few inside functions defer Keras (through visrec.models)
    or keep an entry point light."""
    local = [
        f"{m}:{line} {t}" for m in MODULES for t, is_local, line in _imports(m) if is_local and t in MODULES
    ]
    assert len(local) <= MAX_LOCAL_IMPORTS, "\n".join(local)


def _string_literals(path: Path) -> set[str]:
    return {
        n.value
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_the_dag_file_imports_only_the_pipeline_and_step_names_are_spelt_in_few_files():
    dag_file = ROOT.parent / "dags" / "visrec_nightly.py"
    tree = ast.parse(dag_file.read_text())
    visrec_imports = {
        (n.module if isinstance(n, ast.ImportFrom) else a.name)
        + (f".{a.name}" if isinstance(n, ast.ImportFrom) else "")
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
        if (n.module if isinstance(n, ast.ImportFrom) else a.name or "").startswith("visrec")
    }
    # And visrec's Airflow integration (a sensor Airflow imports by path), which imports only the pipeline.
    assert visrec_imports == {"visrec.pipeline", "visrec_airflow.sensors.RawEventsSensor"}
    sensors = ast.parse((ROOT.parent / "visrec_airflow" / "sensors.py").read_text())
    assert {
        n.module for n in ast.walk(sensors) if isinstance(n, ast.ImportFrom) and n.module.startswith("visrec")
    } == {"visrec"}
    from visrec.pipeline import NAMES

    # Product code only (tests spell the steps they check), and the names that are not also plain
    # words of the domain: "score", "publish" and "report" are columns, verbs and modules too.
    # The shims of moved names (visrec.deprecated) name old functions such as train_cnn, not steps.
    sources = [
        p
        for p in [*ROOT.rglob("*.py"), dag_file, *(ROOT.parent / "bench").rglob("*.py")]
        if "__getattr__ = moved(" not in p.read_text()
    ]
    literals = {path: _string_literals(path) for path in sources}
    spelt = {
        name: sorted(str(p.relative_to(ROOT.parent)) for p, found in literals.items() if name in found)
        for name in NAMES
        if "_" in name
    }
    assert {name: files for name, files in spelt.items() if len(files) > 3} == {}
