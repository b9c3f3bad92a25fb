"""Proves that the test venv can import every third-party module the tests and local tools use.

Owns the derivation of that list, so nobody keeps a second copy of it: the modules named by the
`import` statements of every Python file under tests/ and infra/local/ (top-level names, also
imports inside functions), and those the shell scripts there and tests/run start with
`"$VENV_PY" -m NAME`, minus the standard library (`sys.stdlib_module_names`) and the project's
own modules (the .py files and packages in those folders). `pytest.importorskip("x")` counts as
an import too: on a machine set up by setup.sh no test may be skipped for a missing module. An
import inside `try:` with an `except ImportError` (or ModuleNotFoundError) handler does not: the
file has a fallback for it.

  python check_imports.py REPO_ROOT           import each module (run after the venv install)
  python check_imports.py --find REPO_ROOT    only locate each one (no import: quick, every run)

Exit status 1, with one line per module that fails and where it is used, when any fails.
"""

import argparse
import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path

SCANNED = ("tests", "infra/local")
SCRIPTS = ("tests/run", "infra/local/*.sh", "infra/local/run", "tests/*.sh")
DASH_M = re.compile(r'VENV_PY"?\s+-m\s+([A-Za-z_][\w.]*)')


def python_files(root):
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def own_modules(root):
    """Names a scanned folder provides itself (harness, resources, conftest, ...)."""
    names = set()
    for folder in SCANNED:
        for path in (root / folder).iterdir() if (root / folder).is_dir() else ():
            if path.suffix == ".py":
                names.add(path.stem)
            elif path.is_dir() and (path / "__init__.py").exists():
                names.add(path.name)
    return names


def _has_import_fallback(node):
    """A `try:` with an `except ImportError` (or ModuleNotFoundError) handler."""
    for handler in getattr(node, "handlers", ()):
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds):
            return True
    return False


def _statements(body):
    """Every statement in a block, nested blocks included, but not the bodies of `try:`s with an
    ImportError fallback. Statements only: imports are statements, and the expressions (nine in
    ten of a file's nodes) need no visit, which keeps the every-run check quick."""
    for stmt in body:
        yield stmt
        optional = _has_import_fallback(stmt)
        blocks = [] if optional else [getattr(stmt, "body", [])]
        blocks += [getattr(stmt, "orelse", []), getattr(stmt, "finalbody", [])]
        blocks += [h.body for h in getattr(stmt, "handlers", [])]
        blocks += [c.body for c in getattr(stmt, "cases", [])]
        for block in blocks:
            if isinstance(block, list):  # IfExp-like fields are expressions, not blocks
                yield from _statements(block)


def imports_of(path):
    """(module, line) for each absolute import and importorskip call in one file."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
    if "importorskip" in text:  # the only place an expression is looked at
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "importorskip" and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                yield node.args[0].value, node.lineno


def required_modules(root):
    """{module: first place it is used}: top-level names of imports, dotted names of `-m` runs."""
    skip = set(sys.stdlib_module_names) | own_modules(root)
    found = {}
    for path in python_files(root):
        for name, line in imports_of(path):
            top = name.partition(".")[0]
            if top not in skip:
                found.setdefault(top, f"{path.relative_to(root)}:{line}")
    for pattern in SCRIPTS:
        for path in sorted(root.glob(pattern)):
            for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for name in DASH_M.findall(text):
                    if name.partition(".")[0] not in skip:
                        found.setdefault(name, f"{path.relative_to(root)}:{n}")
    return found


def problem(name, find_only):
    """None when the module is there (imported, or only located with find_only), else why not."""
    try:
        if find_only or "." in name:  # `-m` targets are scripts: locate them, never run them
            return None if importlib.util.find_spec(name) else "not installed"
        importlib.import_module(name)
        return None
    except Exception as e:  # noqa: BLE001 - any failure to import is the finding
        return f"{type(e).__name__}: {e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--find", action="store_true", help="locate the modules, do not import them")
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    modules = required_modules(args.root.resolve())
    failures = [(m, where, why) for m, where in sorted(modules.items())
                if (why := problem(m, args.find))]
    for module, where, why in failures:
        print(f"module {module!r} (used at {where}) is not importable in {sys.prefix}: {why}; "
              "add the PyPI package that provides it to infra/local/requirements.txt", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
