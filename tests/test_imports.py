"""Frameworks stay inside backends/, and a backend is imported only when it is chosen."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = {"torch", "jax", "jaxlib", "flax", "optax"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_outside_backends_imports_a_framework():
    offenders = []
    for folder in ("common", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            if _imports(path) & FRAMEWORKS:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_dependencies_point_one_way():
    """benchmarks -> backends -> common, and never back: no import cycle between the packages."""
    allowed = {"common": {"common"}, "backends": {"backends", "common"},
               "benchmarks": {"benchmarks", "backends", "common"}}
    offenders = []
    for package, may_import in allowed.items():
        for path in (REPO / package).rglob("*.py"):
            wrong = (_imports(path) & set(allowed)) - may_import
            if wrong:
                offenders.append(f"{path.relative_to(REPO)} imports {sorted(wrong)}")
    assert offenders == []


def test_common_is_numpy_only():
    allowed_third_party = {"numpy", "safetensors", "tqdm", "common"}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in (REPO / "common").rglob("*.py"):
        assert _imports(path) <= allowed_third_party | stdlib, path


def test_choosing_one_backend_imports_only_that_framework():
    code = (
        "import sys, backends, backends.cli, backends.trainloop, common.checkpoint;"
        "assert not {'torch','jax','flax','optax'} & set(sys.modules), sorted(set(sys.modules) & {'torch','jax'});"
        "backends.load_backend('torch');"
        "assert 'torch' in sys.modules and 'jax' not in sys.modules and 'flax' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_missing_framework_is_a_clear_error():
    code = (
        "import sys; sys.modules['jax'] = None\n"  # behaves as if jax were not installed
        "import backends\n"
        "from common.errors import UserError\n"
        "try:\n    backends.load_backend('jax')\nexcept UserError as e:\n    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert "pip install 'microgpt[jax]'" in proc.stdout, proc.stderr
