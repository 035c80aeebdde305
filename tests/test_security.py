"""The security rules in README's SECURITY section, checked over the source tree so new code
cannot quietly break them."""

from __future__ import annotations

import ast
from pathlib import Path

from searchkd.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("searchkd", "search_spaces", "runners")


def _calls(name: str):
    """(file, call node) for every call of an attribute or function called ``name``."""
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = (
                        func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    )
                    if called == name:
                        yield path.relative_to(ROOT), node


def test_every_torch_load_is_weights_only():
    loads = list(_calls("load"))
    torch_loads = [
        (path, node)
        for path, node in loads
        if isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "torch"
    ]
    assert torch_loads, "expected at least the checkpoint loader"
    for path, node in torch_loads:
        flags = {k.arg: k.value for k in node.keywords}
        assert "weights_only" in flags, f"{path}:{node.lineno} torch.load without weights_only"
        assert getattr(flags["weights_only"], "value", None) is True, f"{path}:{node.lineno}"


def test_user_code_is_imported_only_from_an_explicit_factory():
    places = {str(path) for path, _ in _calls("import_module")}
    places |= {str(path) for path, _ in _calls("__import__")}
    # teacher.factory: "module:function"; meters: the registry's own lazy targets; an
    # nni:package.module:SpaceClass space (and nni itself) the user named
    assert places == {"searchkd/teacher.py", "searchkd/meters.py", "search_spaces/nni_space.py"}
    from searchkd.meters import METERS

    assert all(kind.target.startswith("searchkd.") for kind in METERS.values())


def test_servers_bind_to_loopback_by_default():
    args = build_parser().parse_args(["dashboard"])
    assert args.host == "127.0.0.1"


def test_a_storage_password_never_reaches_an_error_message():
    """An unreachable database is reported with its URL, the password masked."""
    import pytest

    from searchkd.errors import SearchKDError
    from searchkd.study import load_existing_study, make_storage

    url = "postgresql://searchkd:s3cret-pw@127.0.0.1:9/nowhere"
    for open_it in (make_storage, lambda u: load_existing_study("s", u)):
        with pytest.raises(SearchKDError) as caught:
            open_it(url)
        message = str(caught.value)
        assert "s3cret-pw" not in message and "searchkd:***@127.0.0.1:9" in message
