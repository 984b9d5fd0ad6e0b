"""The layering the README's layout describes, read from the imports of every module (an AST walk).

- Domain code (trajectories/, judging/, training/, evaluation/, simulation/, except their assets.py and
  config.py) imports neither Dagster, `resources` nor `sensors`, nor a module of ours that is the Dagster layer.
- `resources` never imports an assets module.
- Only the operator tools (babylon_assets/tools/) import the tools: they may use everything else, the
  pipeline (domain code, assets, jobs, resources, sensors) never uses them.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_FOLDERS = ("trajectories", "judging", "training", "evaluation", "simulation")
DAGSTER_LAYER_FILES = ("assets.py", "config.py")
# Our modules that define or load Dagster objects; a domain module must not reach Dagster through them.
DAGSTER_LAYER_MODULES = ("babylon_assets.definitions", "babylon_assets.jobs", "babylon_assets.partitions")


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every absolute module a file imports, at module level or inside a function; `from a import b`
    counts as a.b when b is a module of ours (`from babylon_assets import partitions`)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            ours = [name for name in submodules if (root / f"{name.replace('.', '/')}.py").is_file()]
            modules.update(ours or [node.module])
    return modules


def _is_domain(relative: Path) -> bool:
    parts = relative.parts
    return (
        len(parts) == 3
        and parts[0] == "babylon_assets"
        and parts[1] in DOMAIN_FOLDERS
        and parts[2] not in DAGSTER_LAYER_FILES
    )


def _is_assets_module(module: str) -> bool:
    return module.split(".")[-1] == "assets" or ".assets." in module


def layering_violations(root: Path) -> list[str]:
    """`file: imports module (rule)` for every crossing under `root`, sorted."""
    violations: list[str] = []
    paths = [
        path for folder in ("babylon_assets", "resources", "sensors") for path in sorted(root.glob(f"{folder}/**/*.py"))
    ]
    for path in paths:
        relative = path.relative_to(root)
        for module in sorted(imported_modules(path, root)):
            top = module.split(".")[0]
            if _is_domain(relative) and (
                top in ("dagster", "resources", "sensors")
                or top.startswith("dagster_")
                or module.startswith(DAGSTER_LAYER_MODULES)
                or (module.startswith("babylon_assets.") and _is_assets_module(module))
            ):
                violations.append(f"{relative}: imports {module} (domain code imports no Dagster layer)")
            if relative.parts[0] == "resources" and module.startswith("babylon_assets.") and _is_assets_module(module):
                violations.append(f"{relative}: imports {module} (resources import no assets module)")
            if relative.parts[:2] != ("babylon_assets", "tools") and module.startswith("babylon_assets.tools"):
                violations.append(f"{relative}: imports {module} (only the tools import the tools)")
    return violations


def test_the_project_keeps_its_layering() -> None:
    assert layering_violations(ROOT) == []


def test_a_deliberate_crossing_is_named(tmp_path: Path) -> None:
    (tmp_path / "babylon_assets" / "judging").mkdir(parents=True)
    (tmp_path / "resources").mkdir()
    (tmp_path / "babylon_assets" / "judging" / "assets.py").write_text("import dagster as dg\n")
    (tmp_path / "babylon_assets" / "judging" / "config.py").write_text("import dagster as dg\n")
    (tmp_path / "babylon_assets" / "judging" / "score.py").write_text(
        "from babylon_assets.judging.rubric import RUBRIC\n"
        "def judge():\n"
        "    from resources.judge import JudgeResource\n"
        "    import dagster_postgres\n"
    )
    (tmp_path / "babylon_assets" / "training").mkdir()
    (tmp_path / "babylon_assets" / "training" / "assets.py").write_text("import dagster as dg\n")
    (tmp_path / "babylon_assets" / "training" / "data.py").write_text("from babylon_assets.partitions import x\n")
    (tmp_path / "resources" / "judge.py").write_text("from babylon_assets.judging.assets import scored_groups\n")
    (tmp_path / "resources" / "trainer.py").write_text("from babylon_assets.training import assets\n")
    (tmp_path / "babylon_assets" / "tools").mkdir()
    (tmp_path / "babylon_assets" / "tools" / "workers.py").write_text("from babylon_assets.tools.instance import x\n")
    (tmp_path / "babylon_assets" / "jobs.py").write_text("from babylon_assets.tools.workers import QUEUE_TAG\n")
    (tmp_path / "babylon_assets" / "simulation").mkdir()
    (tmp_path / "babylon_assets" / "simulation" / "writer.py").write_text("import dagster\n")
    (tmp_path / "sensors").mkdir()
    (tmp_path / "sensors" / "training.py").write_text("from babylon_assets.tools import train_run\n")

    assert layering_violations(tmp_path) == [
        "babylon_assets/jobs.py: imports babylon_assets.tools.workers (only the tools import the tools)",
        "babylon_assets/judging/score.py: imports dagster_postgres (domain code imports no Dagster layer)",
        "babylon_assets/judging/score.py: imports resources.judge (domain code imports no Dagster layer)",
        "babylon_assets/simulation/writer.py: imports dagster (domain code imports no Dagster layer)",
        "babylon_assets/training/data.py: imports babylon_assets.partitions (domain code imports no Dagster layer)",
        "resources/judge.py: imports babylon_assets.judging.assets (resources import no assets module)",
        "resources/trainer.py: imports babylon_assets.training.assets (resources import no assets module)",
        "sensors/training.py: imports babylon_assets.tools (only the tools import the tools)",
    ]
