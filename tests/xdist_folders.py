"""The one door to pytest-xdist's scheduler internals: ``--dist loadgroup`` runs each test folder on one worker.

``tests/serving``, ``tests/cluster``, ``tests/production``, ... build session-scoped workspaces (a trained
service, a Spark session, a deployment on Redis and PostgreSQL) that take tens of seconds each; a folder's tests
must run on one worker, so that they are built once while the other worker runs another folder.

xdist 3.8's ``loadgroup`` names a test's group by appending ``@group`` to ``item._nodeid``, which pytest 9 no
longer reads (``Item.nodeid`` is built from ``item._id``): every test was a group of its own, the tests of one
folder ran on both workers and each worker built that folder's workspaces. :class:`FolderScheduling` is xdist's
``LoadScopeScheduling`` (whole work units to one worker, the largest first) with its private ``_split_scope``
(a test id to its work unit) answering the test's folder; the files directly in ``tests/`` form one more.
``tests/test_xdist_folders.py`` pins what it relies on.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling


def folder_of(nodeid: str) -> str:
    """``tests/serving/test_x.py::test_y[a]`` -> ``serving``; a file directly in ``tests/`` -> ``root``."""
    parts = nodeid.split("::", 1)[0].split("/")
    return parts[1] if len(parts) > 2 else "root"


class FolderScheduling(LoadScopeScheduling):
    """One work unit per test folder."""

    def _split_scope(self, nodeid: str) -> str:
        return folder_of(nodeid)
