"""The layering of docs/interfaces.md ("Layers"), read from the source: every import statement (also the
ones inside functions) is checked, so a stage cannot reach up into the CLI or into a later stage."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOOR = {"vla_flow.errors", "vla_flow.io", "vla_flow.config", "vla_flow.lock", "vla_flow.worklog"}
ROOF = {"vla_flow.cli", "vla_flow.experiment", "vla_flow.quickstart", "vla_flow.dagger", "vla_flow.distill", "vla_flow.bench",
        "vla_flow.__main__", "vla_flow"}
STAGES = ["envs", "policy", "train", "eval", "reports"]  # each may import the ones before it
ADAPTERS = ("commands.py", "_cli.py", "bench.py")  # CLI/bench adapters of a stage: part of the roof


def modules() -> dict[str, Path]:
    out = {}
    for pkg in [*STAGES, "vla_flow"]:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(p for p in parts if p != "__init__")] = path
    return out


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from vla_flow import config` imports the submodule vla_flow.config
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def layer(module: str, path: Path) -> tuple[str, int]:
    """('floor', 0) | ('stage', k) | ('roof', 99)."""
    if module in FLOOR:
        return "floor", 0
    top = module.split(".")[0]
    if top in STAGES and not path.name.endswith(ADAPTERS):
        return "stage", 1 + STAGES.index(top)
    return "roof", 99


def target_layer(name: str, known: dict[str, Path]) -> tuple[str, int] | None:
    """Layer of an imported project module (None: a third-party or standard module)."""
    top = name.split(".")[0]
    if top not in [*STAGES, "vla_flow"]:
        return None
    for cand in (name, name.rsplit(".", 1)[0]):  # `from pkg.mod import name` or `import pkg.mod`
        if cand in known:
            return layer(cand, known[cand])
    return layer(name, ROOT / "__init__.py")


def violations() -> list[str]:
    known = modules()
    bad = []
    for module, path in sorted(known.items()):
        kind, level = layer(module, path)
        for line, name in imports(path):
            target = target_layer(name, known)
            if target is None:
                continue
            t_kind, t_level = target
            ok = (t_kind == "floor" if kind == "floor" else
                  t_kind in ("floor", "stage") and t_level <= level if kind == "stage" else True)
            if not ok:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {kind} module {module} imports {name} ({t_kind})")
    return bad


def test_no_import_runs_against_the_layering():
    assert violations() == []


def test_the_checker_catches_a_stage_importing_the_roof(tmp_path):
    probe = ROOT / "envs" / "_layering_probe.py"
    probe.write_text("def f():\n    from vla_flow.experiment import load_experiment\n    import reports.summary\n")
    try:
        found = [v for v in violations() if "_layering_probe" in v]
    finally:
        probe.unlink()
    assert len(found) == 2, found


def test_tests_mirror_the_packages():
    """tests/<package>/ for each package it tests, so a module's tests are where a reader looks for them."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    test_dirs = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and list(p.glob("test_*.py"))}
    assert test_dirs <= packages, f"tests/ folders without a package of that name: {sorted(test_dirs - packages)}"
    assert {"vla_flow", *STAGES} <= test_dirs
