"""The conformance suite for backends, shipped so that anyone can check a backend of their own.

Subclass :class:`BackendTests` in a pytest module and supply a ``backend`` fixture that returns a
fresh, empty, writable backend; every test then runs against it::

    from tensorcas.testing import BackendTests

    class TestMyBackend(BackendTests):
        @pytest.fixture
        def backend(self, tmp_path):
            return MyBackend(tmp_path)

The core contract (``tensorcas.backends.base.Backend``) is tested for every backend; each optional
ability (``Appending``, ``Grace``, ``Staging``, ``LocalPaths``, ``Copying``) only for backends that have it.
:meth:`BackendTests.test_holds_a_store` runs the writer, the reader, ``verify`` and ``gc`` over the
backend, and :meth:`BackendTests.test_read_only` the read-only wrapper.

By default the tests look at what a backend stored through the backend itself.  Override
:meth:`BackendTests.raw_get` and :meth:`BackendTests.raw_put` to read and plant objects another way
(the files on disk, the bucket through its own client), so that a backend is not only checked
against itself.  Needs pytest (``pip install tensorcas[test]``).
"""

from __future__ import annotations

from .abilities import (
    AppendingTests,
    CopyingTests,
    GraceTests,
    LocalPathsTests,
    StagingTests,
)
from .core import DATA, KEY, CoreTests, StoreTests

__all__ = [
    "DATA",
    "KEY",
    "AppendingTests",
    "BackendTests",
    "CopyingTests",
    "CoreTests",
    "GraceTests",
    "LocalPathsTests",
    "StagingTests",
    "StoreTests",
]


class BackendTests(
    CoreTests,
    StoreTests,
    AppendingTests,
    CopyingTests,
    GraceTests,
    StagingTests,
    LocalPathsTests,
):
    """Every test of the suite: subclass it and supply the ``backend`` fixture."""
