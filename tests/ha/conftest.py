"""Fixtures of the HA tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ha.replicas import SyncPair, sync_pair


@pytest.fixture
def pair() -> Iterator[SyncPair]:
    """A primary and a synchronous standby (devdb clusters), stopped and removed afterwards."""
    with sync_pair() as p:
        yield p
