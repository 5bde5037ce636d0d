"""The layout of docs/architecture.md holds: one package per domain, imports run one way
(web -> domains -> ledger -> accounts -> platform), no import circles, nothing left at the
flat layout's old paths, and `flask ledger check` lists exactly the registered invariants.

Every import counts, including those inside functions; only imports under
``if TYPE_CHECKING:`` are exempt. Read with ``ast``: nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "billvend"

#: Layer of each top-level part of billvend (higher may import lower, never the reverse).
#: ``billvend`` itself is the app factory (create_app), the one place above every layer.
LAYERS = {
    "platform": 0,
    "accounts": 1,
    "ledger": 2,
    "notifications": 2.5,  # below the domains that cause messages, above the ledger
    "vending": 3,
    "funding": 3,
    "transfers": 3,
    "adjustments": 3,
    "web": 4,
    "sandbox": 4,
    "": 5,          # billvend/__init__.py: the app factory
}
#: Imports between two domains of the same layer, each one way (none today).
ALLOWED_SIDEWAYS: set[tuple[str, str]] = set()

#: Modules and packages of the flat layout that must not come back (no re-export shims).
OLD_MODULES = [
    "config", "extensions", "transactions", "clock", "leases", "queue", "worker", "logs",
    "metrics", "heartbeat", "money", "sessions", "twofactor", "ledger", "pg_transfer",
    "payments", "tasks", "meter_verification", "status_watch", "journey", "funding_tasks",
    "statements", "security", "forms", "cli", "models",
]
#: (an empty directory left behind would still import, as a namespace package)
OLD_PACKAGES = ["providers", "auth", "account", "wallet", "bills", "meters", "history", "admin",
                "webhooks", "main"]

#: What `flask ledger check` lists: every domain's invariants, registered on import.
EXPECTED_INVARIANTS = {
    # ledger
    "transfer_balanced", "balance_matches", "versions_gapless", "user_wallet_negative",
    # vending
    "payment_debits", "payment_debit_wallet", "payment_reversals", "reversal_amount",
    "biller_clearing_reconciles",
    # ledger: every transfer kind has a rule
    "unexplained_movement",
    # funding
    "funding_credits", "dedicated_account_owner", "funding_wallet_reconciles",
    # transfers
    "p2p_matches",
    # adjustments (issue 27)
    "adjustment_approved", "adjustments_wallet_reconciles", "promotions_wallet_reconciles",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every billvend module ``name`` imports (module level, in functions, in try),
    except under ``if TYPE_CHECKING:`` and except its own parent packages (Python
    imports those before the module whatever the code says)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "billvend":
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] == "billvend":
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found if m in known and m != name and m not in ancestors}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_of_billvend_has_a_layer():
    unknown = sorted({part_of(m) for m in modules()} - set(LAYERS))
    assert not unknown, f"give each new package a layer in LAYERS (docs/architecture.md): {unknown}"


def test_imports_run_one_way():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            src, dst = part_of(module), part_of(target)
            if src == dst:
                continue
            if LAYERS[dst] > LAYERS[src] or (
                    LAYERS[dst] == LAYERS[src] and (src, dst) not in ALLOWED_SIDEWAYS):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "upward or undeclared sideways imports:\n" + "\n".join(sorted(wrong))


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the import circles (components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0
    for root in g:
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    return circles


def test_no_import_circles():
    circles = strongly_connected(graph())
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_finds_a_circle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_circle_check_sees_imports_inside_one_package():
    """The graph test_no_import_circles searches holds the imports between two
    modules of one package too (funding's steps import one way, as a layer does)."""
    g = graph()
    assert "billvend.funding.verification" in g["billvend.funding.events"]
    assert "billvend.funding.arrivals" in g["billvend.funding.verification"]
    assert "billvend.funding.verification" not in g["billvend.funding.arrivals"]


def test_nothing_left_at_an_old_path():
    left = [f"billvend/{m}.py" for m in OLD_MODULES if (PACKAGE / f"{m}.py").exists()]
    left += [f"billvend/{p}/" for p in OLD_PACKAGES if (PACKAGE / p).exists()]
    assert not left, f"modules at the flat layout's old paths (move them, no shims): {left}"


@pytest.fixture()
def ledger_check_output(app):
    return app.test_cli_runner().invoke(args=["ledger", "check"])


def test_ledger_check_lists_exactly_the_registered_invariants(app, ledger_check_output):
    from billvend.ledger.invariants import INVARIANTS

    listed = {line.split()[1].rstrip(":") for line in ledger_check_output.output.splitlines()
              if line.startswith(("ok ", "FAIL "))}
    assert listed == EXPECTED_INVARIANTS
    assert set(INVARIANTS) == EXPECTED_INVARIANTS
    assert ledger_check_output.exit_code == 0
