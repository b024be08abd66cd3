"""The product apart from the lab: no module of provision/ outside provision/lab/ imports provision.lab (its
AST: import statements and import_module/__import__ calls, anywhere in the module), save the `provision lab`
command, the command line's one door into the lab; and the installer, as the initrd starts it, loads none
of the lab."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "provision"
LAB = "provision.lab"
DOOR = PACKAGE / "commands" / "lab.py"  # `provision lab`


def imported(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `source`, a module of `package`: relative imports resolved, and
    `from A import b` also names A.b (b may be a module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[:len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [(node.lineno, module), *((node.lineno, f"{module}.{alias.name}") for alias in node.names)]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def package_of(path: Path) -> str:
    """The package a module file belongs to (a package's __init__.py: that package)."""
    return ".".join(path.relative_to(REPO).parent.parts)


def is_lab(module: str) -> bool:
    return module == LAB or module.startswith(LAB + ".")


def test_the_product_never_imports_the_lab():
    product = [p for p in sorted(PACKAGE.rglob("*.py")) if PACKAGE / "lab" not in p.parents and p != DOOR]
    assert PACKAGE / "installer" / "__init__.py" in product and len(product) > 40
    offenders = [f"{path.relative_to(REPO)}:{line}: {module}" for path in product
                 for line, module in imported(path.read_text(), package_of(path)) if is_lab(module)]
    assert not offenders, "the product imports the lab (imports go lab -> product only):\n" + "\n".join(offenders)


@pytest.mark.parametrize("source, lab", [
    ("import provision.lab.node", True),
    ("from provision import lab", True),
    ("from provision.lab.netns import ns_argv", True),
    ("from ..lab import cluster", True),
    ("from . import lab", False),  # provision.commands.lab, the door
    ("importlib.import_module('provision.lab.vm')", True),
    ("def f():\n    from provision.lab import demo", True),
    ("from provision import installer", False),
    ("import provision.labels", False),
])
def test_the_walk_sees_every_form_of_import(source, lab):
    assert any(is_lab(m) for _, m in imported(source, "provision.commands")) == lab


def test_package_of_a_module_and_of_a_package():
    assert package_of(PACKAGE / "installer" / "__init__.py") == "provision.installer"
    assert package_of(PACKAGE / "installer" / "main.py") == "provision.installer"
    assert package_of(PACKAGE / "cli.py") == "provision"


def test_the_installer_loads_no_lab_module():
    code = ("import sys, provision.installer\n"
            "print(' '.join(m for m in sys.modules if m == 'provision.lab' or m.startswith('provision.lab.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == ""
