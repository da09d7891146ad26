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
