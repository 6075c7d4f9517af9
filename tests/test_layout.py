"""moebench/'s layout is its pipeline: the foundation modules and reproduce.py at the top, one
subpackage per stage, and every import flowing down the stage order (a stage uses the foundation and
the stages before it, never one after). Checked on the source, every import form, top level or not."""

from __future__ import annotations

import ast
from pathlib import Path

from moebench.config import REPO_ROOT

PACKAGE = REPO_ROOT / "moebench"
FOUNDATION = ("config", "errors", "paths", "files", "hashing")
# the pipeline, in order; a stage may import only the foundation and the stages before it
STAGES = ("pins", "models", "images", "nix", "verify", "run", "analysis", "evidence", "fleet", "reproduce")


def stage_of(module: str) -> str:
    """'moebench.run.plan' -> 'run'; a foundation module -> 'foundation'."""
    head = module.split(".")[1] if module.count(".") else ""
    return "foundation" if head in FOUNDATION or not head else head


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("moebench.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("moebench"):
            found |= ({f"moebench.{a.name}" for a in node.names} if node.module == "moebench" else {node.module})
    return found


def test_the_top_holds_the_foundation_reproduce_and_one_package_per_stage():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules == {*FOUNDATION, "reproduce"}
    assert packages == set(STAGES) - {"reproduce"}
    for package in packages:  # each says what its stage takes and gives
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
        assert doc and "akes" in doc and "ives" in doc, f"moebench/{package}/__init__.py: what it takes and gives"


def test_imports_flow_down_the_stage_order():
    rank = {"foundation": -1, **{stage: i for i, stage in enumerate(STAGES)}}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "moebench." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = stage_of(module)
        for target in imports(path):
            if rank[stage_of(target)] > rank[own]:
                upward.append(f"{path.relative_to(REPO_ROOT)} ({own}) imports {target} ({stage_of(target)})")
    assert upward == []


def test_no_module_name_carries_its_stage_as_a_prefix():
    prefixed = [str(p.relative_to(REPO_ROOT)) for p in PACKAGE.rglob("*.py")
                if p.parent != PACKAGE and p.stem.startswith(p.parent.name + "_")]
    assert prefixed == []
