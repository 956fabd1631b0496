"""What ``tests/xdist_folders.py`` takes from pytest-xdist's scheduler internals, pinned."""

from __future__ import annotations

import inspect

from xdist.scheduler import LoadScopeScheduling

from tests.xdist_folders import FolderScheduling, folder_of


def test_a_test_id_maps_to_its_folder() -> None:
    assert folder_of("tests/serving/test_service.py::test_tags[a/b::c]") == "serving"
    assert folder_of("tests/cluster/test_bento.py::TestX::test_y") == "cluster"
    assert folder_of("tests/test_quiet.py::test_x") == "root"


def test_load_scope_scheduling_groups_work_by_split_scope() -> None:
    """LoadScopeScheduling builds its work units from ``_split_scope`` and counts completions by it."""
    assert "self._split_scope(nodeid)" in inspect.getsource(LoadScopeScheduling.schedule)
    assert "self._split_scope(nodeid)" in inspect.getsource(LoadScopeScheduling.mark_test_complete)
    assert FolderScheduling._split_scope is not LoadScopeScheduling._split_scope
