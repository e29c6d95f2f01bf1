"""The harness's layout: no import cycle between its modules nor between its subpackages, counting imports inside
functions too, and each registry names what the rest of the harness offers."""
import ast
import importlib
from pathlib import Path

import pytest

import groupnorm.experiments as E
from groupnorm.experiments.data import FORMATS, DATASET_CHOICES
from groupnorm.experiments.data.formats import DENSE_TASKS, TASKS
from groupnorm.experiments.models import ARCHS
from groupnorm.experiments.protocol import EXPERIMENTS, PLANS
from groupnorm.experiments.protocol.experiments import PLAN_TASKS

ROOT = Path(E.__file__).resolve().parent
# data <- models <- protocol <- training <- launch; report reads rows (and protocol, models); the shared modules
# (store, cli) and the deprecated aliases (config, train) sit beside them. A subpackage may import only from those
# before it in this order.
ORDER = ("store", "data", "models", "metrics", "protocol", "training", "launch", "report", "cli", "config", "train")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The harness modules that ``path`` imports (relative or absolute, at any depth of the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                if node.level - 1 > len(base):
                    continue  # above the harness (groupnorm's own modules)
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("groupnorm.experiments"):
                target = node.module[len("groupnorm.experiments"):].lstrip(".")
            else:
                continue
            for alias in node.names:  # "from . import store" names a module
                sub = f"{target}.{alias.name}" if target else alias.name
                out.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists()
                        or (ROOT / sub.replace(".", "/")).is_dir() else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("groupnorm.experiments."):
                    out.add(alias.name[len("groupnorm.experiments."):])
    return {t for t in out if t and t != name}


GRAPH = {_module_name(p): _imports(p) for p in ROOT.rglob("*.py") if _module_name(p)}


def _cycle(graph: dict) -> list | None:
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_graph_sees_lazy_imports():
    # a check that finds nothing must be able to find something: a function-level import is an edge
    assert "data.noniid" in GRAPH["data.loading"] and "data.imagefolder" in GRAPH["data.formats"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_modules():
    assert _cycle(GRAPH) is None, _cycle(GRAPH)


def test_subpackages_import_only_those_below_them():
    bad = []
    for mod, targets in GRAPH.items():
        top = mod.split(".")[0]
        for t in targets:
            if t.split(".")[0] != top and ORDER.index(t.split(".")[0]) > ORDER.index(top):
                bad.append(f"{mod} -> {t}")
    assert not bad, bad


def test_registries_name_every_member():
    assert DATASET_CHOICES == ("auto", *FORMATS)
    assert EXPERIMENTS == (*PLANS, "all")
    assert {a.module for a in ARCHS.values()} == {"resnets", "vgg", "resnet3d", "centernet", "two_stage", "unet"}
    assert {a.task for a in ARCHS.values()} == set(TASKS)
    assert [n for n, a in ARCHS.items() if a.task == "video"] == ["resnet3d"]
    assert set(DENSE_TASKS) <= set(TASKS)
    for name, fmt in FORMATS.items():
        assert fmt.task == "classification" and fmt.holds, name
    assert {t for n in PLANS for t in PLAN_TASKS.get(n, ("classification",))} == set(TASKS)


@pytest.mark.parametrize("old, new, names", [("config", "protocol", ("RunConfig", "experiment_configs", "PRESETS")),
                                             ("train", "training", ("train_run", "lr_at", "evaluate"))])
def test_old_module_paths_are_deprecated_aliases(old, new, names):
    with pytest.warns(DeprecationWarning, match=f"groupnorm.experiments.{old} is deprecated"):
        mod = importlib.reload(importlib.import_module(f"groupnorm.experiments.{old}"))
    target = importlib.import_module(f"groupnorm.experiments.{new}")
    assert all(getattr(mod, n) is getattr(target, n) for n in names)
    if old == "train":
        assert mod.build_model is target.build_run_model
