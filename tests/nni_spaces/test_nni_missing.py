"""What an ``nni:`` space costs a user without nni, and the names and settings refused before
nni is needed. These run in every environment: where nni is installed, the tests hide it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from search_spaces import get_space
from search_spaces.nni_space import parse_name
from searchkd import cli
from searchkd.config import build_config
from searchkd.errors import ArchitectureError, SearchKDError

TOY = "nni:tests.nni_spaces.toy_space:ToySpace"


@pytest.fixture
def without_nni(monkeypatch):
    """nni as if not installed (a None entry in sys.modules makes its import fail)."""
    for name in [m for m in sys.modules if m == "nni" or m.startswith("nni.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nni", None)
    monkeypatch.setattr("search_spaces.nni_space._CACHE", {})


def test_without_nni_the_space_says_how_to_install_it(without_nni):
    with pytest.raises(SearchKDError, match=r'install the extra: pip install "searchkd\[nni\]"$'):
        get_space(TOY)


def test_without_nni_the_cli_fails_in_one_line(without_nni, capsys):
    assert cli.main(["space", TOY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "searchkd: error: NNI spaces need nni and pytorch-lightning (nni is not installed); "
        'install the extra: pip install "searchkd[nni]"'
    ]


@pytest.mark.slow  # a fresh interpreter: 3 s
def test_core_imports_leave_nni_unimported():
    """Only an nni: space imports nni: the library, the CLI and the spaces load without it."""
    code = (
        "import sys, searchkd, searchkd.cli, searchkd.search, search_spaces, runners.loop;"
        "from search_spaces import get_space; get_space('compact');"
        "assert 'nni' not in sys.modules, 'nni was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "name",
    ["nni:", "nni:my_space", "nni:spaces/my_space.py:MySpace", "nni:a..b:C", "nni:a.b:C:D"],
)
def test_a_name_outside_the_form_is_refused_before_nni_is_imported(name, without_nni):
    with pytest.raises(ArchitectureError, match="an NNI space is named nni:package.module:"):
        parse_name(name)
    with pytest.raises(ArchitectureError, match="an NNI space is named"):
        get_space(name)


def test_space_args_belong_to_nni_spaces_only():
    with pytest.raises(SearchKDError, match="space_args and space_taps are for nni:"):
        build_config(overrides={"space": "compact", "space_args": {"width": 8}})
    with pytest.raises(ArchitectureError, match="takes no space_args"):
        get_space("compact", {"width": 8})


def test_an_nni_space_keeps_the_default_study_name_a_file_name():
    config = build_config(overrides={"dataset": "digits", "space": TOY})
    assert config.study_name == "digits-nni-tests.nni_spaces.toy_space-ToySpace"


def test_studies_of_the_registered_spaces_keep_their_settings():
    """space_args and space_taps appear in a study's settings only when given, so studies
    made before them resume."""
    settings = build_config(overrides={"space": "compact"}).search_settings()
    assert "space_args" not in settings and "space_taps" not in settings
    nni_settings = build_config(overrides={"space": TOY, "space_args": {"widths": [4]}})
    assert nni_settings.search_settings()["space_args"] == {"widths": [4]}
