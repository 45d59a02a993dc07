"""Dependencies point one way (DESIGN.md, Stack): `billing` may import `accounts`, never the
reverse; `config` knows no app's internals beyond its URLs (the apps register their errors and
metrics with config, from their own code).

Every module is read as source with `ast`, migrations and management commands included, so an
import inside a function counts as much as one at the top. Settings naming an app's class as a
string (AUTH_USER_MODEL, DRF's authentication classes) configure the app the way Django does; they
are not imports and are not checked.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = sorted(path.parent.name for path in ROOT.glob("*/apps.py"))  # accounts, billing
CONFIG_MAY_IMPORT = {f"{app}.urls" for app in APPS}
DYNAMIC_IMPORTS = {"import_module", "__import__", "import_string"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything `source`, the text of `module`, imports: `from a import b`
    gives `a.b`, so a name says which submodule it reaches; relative imports are resolved; a
    string given to importlib.import_module(), __import__() or import_string() counts too."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(package):
                    continue  # beyond the top-level package: Python refuses it anyway
                base = ".".join([*package[: len(package) - (node.level - 1)], *filter(None, [node.module])])
            else:
                base = node.module or ""
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in DYNAMIC_IMPORTS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value


def within(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def sources(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no modules under {package}/"
    return found


def imports_of(package: str) -> Iterator[tuple[str, int, str]]:
    """(file, line, imported name) for every import in every module under `package`/."""
    for path in sources(package):
        names = imported_names(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
        for line, name in names:
            yield f"{path.relative_to(ROOT)}:{line}", line, name


def test_the_scan_reads_the_modules_the_rules_are_about():
    assert {"accounts", "billing", "waitlist"} <= set(APPS), APPS
    accounts = {str(path.relative_to(ROOT)) for path in sources("accounts")}
    assert {"accounts/services.py", "accounts/api.py", "accounts/migrations/0001_initial.py"} <= accounts
    config = {str(path.relative_to(ROOT)) for path in sources("config")}
    assert {"config/urls.py", "config/errors.py", "config/metrics.py", "config/settings/base.py"} <= config
    assert any(within(name, "billing.urls") for _, _, name in imports_of("config"))


def test_accounts_imports_no_other_app():
    """accounts is the base every app builds on: billing, console, notifications and waitlist
    import it, it imports none of them (it announces through accounts.signals instead)."""
    others = [app for app in APPS if app != "accounts"]
    found = [
        f"{where} imports {name}"
        for where, _, name in imports_of("accounts")
        if any(within(name, app) for app in others)
    ]
    assert not found, "accounts must not depend on another app:\n" + "\n".join(found)


def test_config_imports_no_app_module_but_the_apps_url_modules():
    found = [
        f"{where} imports {name}"
        for where, _, name in imports_of("config")
        if any(within(name, app) for app in APPS) and not any(within(name, urls) for urls in CONFIG_MAY_IMPORT)
    ]
    assert not found, "config may import only the apps' URL modules:\n" + "\n".join(found)


def test_the_scan_finds_every_form_of_import():
    source = """
import billing.models
from billing import api
from billing.errors import BillingError
from . import urls
from .. import services
from ...beyond import nothing
import importlib

def late():
    from billing.metrics import LedgerStateCollector
    return importlib.import_module("billing.selectors")
"""
    names = [name for _, name in imported_names(source, "accounts.sub.module")]
    assert names == [
        "billing.models",
        "billing.api",
        "billing.errors.BillingError",
        "accounts.sub.urls",
        "accounts.services",
        "importlib",
        "billing.metrics.LedgerStateCollector",
        "billing.selectors",
    ], names
    assert [name for _, name in imported_names("from .urls import x", "config", is_package=True)] == ["config.urls.x"]
    assert within("billing.urls.api_v1", "billing.urls") and not within("billing.urlsx", "billing.urls")
