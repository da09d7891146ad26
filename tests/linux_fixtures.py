"""The real Debian kernel and busybox initramfs, fetched once per test session.

CI has the network and apt, so `dbgvm linux fetch` runs there (quickly when cached). Where
the fetch cannot work (no apt, no i386, no root for the first fetch) the tests that need the
real kernel fail with the reason: booting Linux is a feature, not an option.
"""
from __future__ import annotations

import pytest

from dbgvm.linux.fetch import FetchError, LinuxFiles, fetch


@pytest.fixture(scope="session")
def linux_kernel() -> LinuxFiles:
    try:
        return fetch(lambda text: None)
    except FetchError as exc:
        pytest.fail(f"no Debian i386 kernel: dbgvm linux fetch: {exc}")
