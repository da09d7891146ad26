"""The calibrated Unicorn internals: the start-up self-test and what it protects against."""
from __future__ import annotations

from dbgvm.core import uc_internals


def test_layout_is_found_and_verified():
    layout = uc_internals.calibrated_layout()
    assert layout.dr0_in_context > 0 and layout.counter_in_engine > 0


def test_without_the_reset_the_second_gp_becomes_a_double_fault():
    """The bug the latch works around is real on this Unicorn: without rearm() the
    second #GP arrives as vector 8, so a regression in the workaround would show."""
    uc = uc_internals._scratch_engine()
    from unicorn import UC_HOOK_INTR
    from unicorn.x86_const import UC_X86_REG_EIP
    seen = []

    def on_intr(u, intno, _):
        seen.append(intno)
        u.reg_write(UC_X86_REG_EIP, u.reg_read(UC_X86_REG_EIP) + 2)

    uc.hook_add(UC_HOOK_INTR, on_intr)
    uc.emu_start(0x2000, 0, count=1)
    uc.ctl_flush_tb()
    uc.emu_start(0x3000, 0, count=4)
    assert seen[:2] == [13, 8]


_PRODUCERS = {   # flags producer -> (code, the CF it leaves)
    "cmp": (bytes.fromhex("b800200000 be00e01200 39f0"), 1),         # 0x2000 - 0x12e000
    "add": (bytes.fromhex("b800f0ffff 0500200000"), 1),               # 0xfffff000 + 0x2000
    "shl": (bytes.fromhex("b800100080 d1e0"), 1),                     # 0x80001000 << 1
    "sbb": (bytes.fromhex("31c0 83e801 ba00100000 81da00200000"), 1),  # 0x1000 - 0x2000 - 1
}


def _cf_after_page_fault(producer: bytes, count: int | None, settle: bool) -> int:
    """Raw Unicorn, CPL 0, paging on: PRODUCER; mov [0x300000],ecx (#PF, the hook maps the
    page); setc bl. Returns bl."""
    import struct

    from unicorn import UC_ARCH_X86, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_HOOK_INTR, \
        UC_MODE_32, Uc
    from unicorn.x86_const import UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_EBX, \
        UC_X86_REG_ESP
    code = bytes.fromhex("31db") + producer + bytes.fromhex("890d00003000 0f92c3")
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x400000)
    uc.mem_write(0x1000, struct.pack("<I", 0x2000 | 3))
    uc.mem_write(0x2000, b"".join(struct.pack("<I", i << 12 | 3) for i in range(0x300)))
    uc.mem_write(0x10000, code)
    uc.reg_write(UC_X86_REG_ESP, 0x8000)
    uc.reg_write(UC_X86_REG_CR3, 0x1000)
    uc.reg_write(UC_X86_REG_CR0, uc.reg_read(UC_X86_REG_CR0) | 0x80000001)
    latch = uc_internals.ExceptionLatch(uc, uc_internals.calibrated_layout())

    def on_intr(u, intno, _):
        assert intno == 14
        latch.pending()
        if settle:
            latch.settle_flags()
        u.mem_write(0x2000 + 0x300 * 4, struct.pack("<I", 0x300000 | 3))
        u.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        latch.rearm()

    uc.hook_add(UC_HOOK_INTR, on_intr)
    uc.emu_start(0x10000, 0x10000 + len(code), count=count or 0)
    return uc.reg_read(UC_X86_REG_EBX) & 0xFF


def test_flags_lost_across_a_fault_with_a_code_hook_and_repaired():
    """uc_internals doc, item 3: with count=N (a code hook on every instruction) a fault
    between a flag producer and its consumer loses CF; without a code hook it does not;
    settle_flags() in the exception hook brings it back."""
    for name, (producer, cf) in _PRODUCERS.items():
        assert _cf_after_page_fault(producer, None, settle=False) == cf, name
        assert _cf_after_page_fault(producer, 1000, settle=False) != cf, name
        assert _cf_after_page_fault(producer, 1000, settle=True) == cf, name


def test_self_test_refuses_without_the_repair(monkeypatch):
    """The start-up self-test checks the repair, not just the layout."""
    import pytest
    monkeypatch.setattr(uc_internals.ExceptionLatch, "settle_flags", lambda self: None)
    uc_internals.calibrated_layout.cache_clear()
    try:
        with pytest.raises(uc_internals.UnicornLayoutError, match="flags self-test"):
            uc_internals.calibrated_layout()
    finally:
        uc_internals.calibrated_layout.cache_clear()


def test_latch_through_contexts_when_the_live_state_is_not_found(monkeypatch):
    """Without the live CPU state the latch goes through saved contexts, and the start-up
    self-test still passes with it; a guest still runs."""
    import pytest

    def not_found(*args):
        raise uc_internals.UnicornLayoutError("not found")
    monkeypatch.setattr(uc_internals, "_locate_env", not_found)
    uc_internals.calibrated_layout.cache_clear()
    try:
        layout = uc_internals.calibrated_layout()
        assert layout.cpu_in_engine == -1
        from guest_build import build
        from dbgvm.core.assembly import build_machine
        from dbgvm.core.loader import load
        machine = build_machine()
        assert machine.latch._through_context
        machine.load(load(build("archfaults"), machine.ram_size))
        assert machine.run(50_000_000).exit_status == 7     # as tests/test_core.py expects
    finally:
        uc_internals.calibrated_layout.cache_clear()
