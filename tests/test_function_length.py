"""No function in the money core is over 60 lines (issue 22, "functions a reader can hold").

A function's length is ``end_lineno - lineno + 1`` of its ``def`` (decorators excluded, its
docstring and comments included). A nested function is measured on its own and its lines also
count towards the function that holds it: nesting does not hide length. Read with ``ast``:
nothing is imported to check it.

A new money domain (notifications, transfers, payouts, ...) is checked as soon as its package
exists; a new package that is in neither tuple below fails
``test_every_package_is_money_core_or_not``, so the limit cannot be skipped by forgetting it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

#: The money core: every package here, and every module under it, keeps the limit.
MONEY_CORE = ("ledger", "vending", "funding", "notifications", "transfers", "payouts", "adjustments")
#: Packages of billvend outside the money core (plumbing, accounts, the web tier, test servers).
NOT_MONEY_CORE = ("platform", "accounts", "web", "sandbox")
MAX_LINES = 60

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "billvend"


def long_functions(path: Path, limit: int = MAX_LINES) -> list[str]:
    """Every function in the file at ``path`` longer than ``limit`` lines.

    Returns ``"<path>:<line> <qualified name> (<n> lines)"`` strings, in file order; methods
    and nested functions are named ``Outer.inner``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}."
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1
                if length > limit:
                    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    found.append(f"{where}:{child.lineno} {name[:-1]} ({length} lines)")
            visit(child, name)

    visit(tree, "")
    return found


@pytest.mark.parametrize("package", MONEY_CORE)
def test_no_money_core_function_is_over_60_lines(package):
    directory = PACKAGE / package
    if not directory.is_dir():
        pytest.skip(f"billvend/{package}/ does not exist yet")
    offenders = [line for path in sorted(directory.rglob("*.py")) for line in long_functions(path)]
    assert offenders == [], (
        f"functions over {MAX_LINES} lines in billvend/{package}/ (split them where their "
        "steps are):\n" + "\n".join(offenders)
    )


def test_every_package_is_money_core_or_not():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    unclassified = packages - set(MONEY_CORE) - set(NOT_MONEY_CORE)
    assert unclassified == set(), (
        f"add {sorted(unclassified)} to MONEY_CORE (a money domain: keeps the {MAX_LINES}-line "
        "limit) or NOT_MONEY_CORE in tests/test_function_length.py"
    )
    assert set(MONEY_CORE) & set(NOT_MONEY_CORE) == set()


def test_the_measure_counts_def_to_last_line_without_decorators(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    source = (
        "import functools\n"
        "@functools.lru_cache\n"            # decorators are not counted
        f"def fits():\n{body}\n\n"          # def + 59 lines = 60
        f"def too_long():\n{body}\n    x = 1\n\n"   # 61
        "class Outer:\n"
        f"    def method(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n        y = 2\n"
        "        def inner():\n"
        f"        {body.replace(chr(10), chr(10) + '        ')}\n            z = 3\n"
    )
    path = tmp_path / "sample.py"
    path.write_text(source, encoding="utf-8")
    found = long_functions(path)
    names = [line.split(" ")[1] for line in found]
    assert names == ["too_long", "Outer.method", "Outer.method.inner"]
    assert "(61 lines)" in found[0]
