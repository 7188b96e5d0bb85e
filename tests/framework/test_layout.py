"""The tree is the architecture: no import cycles, the library never imports its command line, evaluation runs
without Lightning, merging without PEFT or transformers, tasks import only the task contract, and a newly
registered adapter type is covered by the contract suites without editing a test."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"framework": "adamergex", "strategies": "adamergex.strategies", "tasks": "adamergex.tasks",
            "recipes": "adamergex.recipes"}


def _modules() -> dict[str, Path]:
    """Module name → file, for every installed module of the project."""
    out = {}
    for folder, package in sorted(PACKAGES.items(), key=lambda kv: -len(kv[1])):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.setdefault(".".join([package, *parts]), path)
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str, *, top_level_only: bool) -> set[str]:
    """Project modules that module ``name`` imports (resolved; ``from x import y`` counts x, and x.y when y is a
    module). ``top_level_only``: only imports executed at import time (not inside functions, not TYPE_CHECKING)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if _is_package(name) else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])
                elif isinstance(child, ast.excepthandler):
                    visit(child.body)

    visit(tree.body)
    return {m for m in found if m in MODULES}


def test_every_module_imports(tmp_path: Path) -> None:
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_import_cycle_between_modules() -> None:
    graph = {name: _imports(name, top_level_only=True) for name in MODULES}
    # A package's __init__ importing its own modules, and those importing siblings, is the facade pattern; a
    # module importing its package back (or any longer loop) is a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if m != name and not (name.startswith(m + ".") and _is_package(m)
                                                                 and MODULES[m].parent == MODULES[name].parent)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)


def test_the_library_never_imports_the_command_line() -> None:
    offenders = {name: sorted(m for m in _imports(name, top_level_only=False) if m.startswith("adamergex.cli"))
                 for name in MODULES if not name.startswith("adamergex.cli")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_tasks_import_only_the_task_contract() -> None:
    allowed = ("adamergex.task", "adamergex.errors", "adamergex.registry", "adamergex.packing", "adamergex.tiny",
               "adamergex.tasks")
    offenders = {name: sorted(m for m in _imports(name, top_level_only=False) if not m.startswith(allowed))
                 for name in MODULES if name.startswith("adamergex.tasks")}
    assert {k: v for k, v in offenders.items() if v} == {}


def _loaded_after(code: str) -> set[str]:
    probe = textwrap.dedent(code) + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def test_evaluation_does_not_import_lightning() -> None:
    loaded = _loaded_after("import adamergex.evaluation, adamergex.cli.evaluate, adamergex.tuning")
    assert "torch" in loaded and "lightning" not in loaded and "pytorch_lightning" not in loaded


def test_merging_and_every_strategy_import_neither_peft_nor_transformers(tmp_path: Path) -> None:
    from adamergex.io import save_adapter
    from tests._adapters import make_state

    for role, seed in (("task", 1), ("ref_source", 2), ("ref_target", 3)):
        save_adapter(make_state("lora", seed=seed, head=role == "task"), tmp_path / role)
    loaded = _loaded_after(f"""
        from adamergex.cli import main
        from adamergex.registry import STRATEGIES, ADAPTERS
        STRATEGIES.names(), ADAPTERS.names()
        assert main(["merge", "--strategy", "adamergex", "--task", r"{tmp_path / 'task'}",
                     "--ref-source", r"{tmp_path / 'ref_source'}", "--ref-target", r"{tmp_path / 'ref_target'}",
                     "--rank", "4", "--output", r"{tmp_path / 'out'}"]) == 0
        assert main(["strategies"]) == 0
    """)
    assert "torch" in loaded and "safetensors" in loaded
    assert not {"peft", "transformers", "lightning", "optuna", "datasets"} & loaded


PLUGIN = '''
"""A trivial additive plug-in type: LoRA's algebra under another name (what a user's package would register)."""
from adamergex.adapters.base import register_adapter_type
from adamergex.adapters.lora import LoraAdapter


@register_adapter_type
class TwinAdapter(LoraAdapter):
    name = "lora_twin"

    def claims(self, config):  # reads back only the directories it wrote (recorded in adamergex.json)
        return False
'''


def test_a_registered_adapter_type_is_covered_by_the_contract_suites(tmp_path: Path) -> None:
    (tmp_path / "twin_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    suites = ["tests/strategies/test_contract.py", "tests/adapters"]
    listed = subprocess.run([sys.executable, "-m", "pytest", "-p", "twin_plugin", "--collect-only", "-q", *suites],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-2000:]
    twin = [line for line in listed.stdout.splitlines() if re.search(r"[\[-]lora_twin[\]-]", line)]
    lora = [line for line in listed.stdout.splitlines() if re.search(r"[\[-]lora[\]-]", line)]
    assert len(twin) == len(lora) > 20  # every case the built-in LoRA gets, the plug-in gets too
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "twin_plugin", "-q", "-x", "-p", "no:cacheprovider",
                          "-k", "lora_twin", "tests/strategies/test_contract.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert " passed" in ran.stdout and " failed" not in ran.stdout


@pytest.mark.parametrize("command", sorted(__import__("adamergex.cli", fromlist=["COMMANDS"]).COMMANDS))
def test_every_command_has_help_and_exit_status_zero(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from adamergex.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and f"usage: adamergex {command}" in capsys.readouterr().out


def test_unknown_command_and_bad_flag_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    from adamergex.cli import main

    assert main(["nope"]) == 2
    assert "unknown command 'nope'; available: ablate, cache, demo, diagnose, evaluate, merge" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["merge", "--no-such-flag"])
    assert exit_.value.code == 2
