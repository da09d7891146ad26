"""Addresses as people read them: ``0x00100023 <main+0x3>``, from the kernel ELF's symbols."""
from __future__ import annotations

import bisect
from collections.abc import Mapping

MAX_OFFSET = 0x10000    # farther than this past a symbol, an address is not "in" it


class SymbolTable:
    def __init__(self, symbols: Mapping[str, int]) -> None:
        self.by_name = dict(symbols)
        # per address keep one name: the first in name order, so output is deterministic
        by_addr: dict[int, str] = {}
        for name in sorted(symbols):
            by_addr.setdefault(symbols[name], name)
        self._addrs = sorted(by_addr)
        self._names = [by_addr[a] for a in self._addrs]

    def near(self, addr: int) -> tuple[str, int] | None:
        """The closest symbol at or below ``addr`` and the offset from it."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or addr - self._addrs[i] > MAX_OFFSET:
            return None
        return self._names[i], addr - self._addrs[i]

    def exact(self, addr: int) -> str | None:
        i = bisect.bisect_left(self._addrs, addr)
        return self._names[i] if i < len(self._addrs) and self._addrs[i] == addr else None

    def label(self, addr: int) -> str:
        """`` <name+0x4>`` (with the leading space) or the empty string."""
        found = self.near(addr)
        if found is None:
            return ""
        name, offset = found
        return f" <{name}+{offset:#x}>" if offset else f" <{name}>"

    def address(self, addr: int) -> str:
        return f"{addr:#010x}{self.label(addr)}"
