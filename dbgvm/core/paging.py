"""Control registers and paging: the guest's CR0/CR2/CR3/CR4, what changing them does to the
shadow MMU, INVLPG, and the #PF trap under the shadow (fill and restart, carry out or let through a store
to a write-protected page table, or reflect the fault to the guest)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_CR2, UC_X86_REG_CR3, UC_X86_REG_CS, UC_X86_REG_EIP

from .descriptors import VMM_HOLE
from .events import EventKind
from .faults import GuestFault, GuestStop, Vector
from .guest_paging import FRAME, PageFault
from .pt_store import StorePlans
from .stops import StopReason
from .shadow_mmu import OutsideRam, ProtectedWrite, ShadowFull
from .vcpu import CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE

if TYPE_CHECKING:
    from .cpu_context import VmmContext
    from .decoder import Decoder


class Paging:
    def __init__(self, owner: "VmmContext", decoder: "Decoder") -> None:
        self._m = owner
        self._decoder = decoder
        self._plans = StorePlans()

    # -- control registers ----------------------------------------------------------------
    def read_cr(self, index: int) -> int:
        vcpu = self._m.vcpu
        values = {0: vcpu.cr0, 2: vcpu.cr2, 3: vcpu.cr3, 4: vcpu.cr4}
        if index not in values:
            raise GuestFault(Vector.UD)
        return values[index]

    def write_cr(self, index: int, value: int) -> None:
        vcpu = self._m.vcpu
        if index == 0:
            if not value & CR0_PE:
                raise GuestStop(StopReason.UNSUPPORTED, "clearing CR0.PE (real mode) is not "
                                "supported")
            old, vcpu.cr0 = vcpu.cr0, value | CR0_ET
            if (old ^ vcpu.cr0) & (CR0_PG | CR0_WP) and (old | vcpu.cr0) & CR0_PG:
                self.paging_changed("cr0")
        elif index == 2:
            vcpu.cr2 = value
        elif index == 3:
            vcpu.cr3 = value
            if vcpu.cr0 & CR0_PG:
                self.paging_changed("cr3")
        elif index == 4:
            if value & CR4_PAE:
                raise GuestStop(StopReason.UNSUPPORTED, "PAE paging (CR4.PAE) is not supported")
            old, vcpu.cr4 = vcpu.cr4, value
            if (old ^ value) & CR4_PSE and vcpu.cr0 & CR0_PG:
                self.paging_changed("cr4")
        else:
            raise GuestFault(Vector.UD)

    def paging_changed(self, cause: str) -> None:
        """Guest paging mode or CR3 changed: flush the shadow and point the CPU at it."""
        m = self._m
        vcpu = m.vcpu
        m.mmu.configure(bool(vcpu.cr0 & CR0_PG), vcpu.cr3, bool(vcpu.cr0 & CR0_WP),
                        bool(vcpu.cr4 & CR4_PSE), m.trap_eip, cause)
        m.uc.reg_write(UC_X86_REG_CR3, m.mmu.root(vcpu.cpl == 3).pd_addr)
        self.descriptor_tables_moved()
        m.sync_exits()

    def descriptor_tables_moved(self) -> None:
        """The guest loaded a GDT/LDT or changed paging: watch the bytes its tables occupy,
        so that a rewritten descriptor is noticed (descriptor_watch.py)."""
        self._m.descriptor_watch.tables_moved()

    def invlpg(self, linear: int) -> None:
        m = self._m
        m.mmu.invlpg(linear, m.trap_eip)
        m.sync_exits()

    # -- the #PF trap ---------------------------------------------------------------------
    def after_protected_write(self, write: ProtectedWrite, ring3: bool, eip: int) -> None:
        m = self._m
        m.mmu.after_protected_write(write.vaddr, write.paddr, ring3, eip)
        m.sync_exits()

    def _is_fetch(self, vaddr: int, eip: int) -> bool:
        """Did fetching the instruction at EIP fault (rather than one of its data reads)?
        A page the instruction lies on cannot fault for a read once fetched, so a read fault
        inside the instruction's own bytes is its fetch."""
        m = self._m
        start = m.tables.base_of(m.regs.read(UC_X86_REG_CS)) + eip
        if not start & ~0xFFF <= vaddr < ((start + 15) & ~0xFFF) + 0x1000:
            return False
        if vaddr & ~0xFFF == start & ~0xFFF:
            return True
        try:
            length = self._decoder.decoded(eip).size   # through the guest's tables
        except (GuestFault, GuestStop):
            return True
        return vaddr < start + length

    def page_fault(self, error_code: int, eip: int) -> None:
        """A #PF under the shadow: fill and restart, or reflect to the guest."""
        m = self._m
        vaddr = m.regs.read(UC_X86_REG_CR2)
        write = bool(error_code & 2)
        counted = write or not self._is_fetch(vaddr, eip)
        if counted:
            m.latch.settle_flags()   # the instruction had started: see uc_internals, 3
        if vaddr >= VMM_HOLE:
            # beyond the truncated segment limit, as the hardware would see it: #SS(0) for a
            # stack access, else #GP(0)
            m.emit_at(EventKind.TRAP, eip, vector=int(Vector.PF),
                      insn=m.describe_insn(eip), action="reflect")
            stack = self._decoder.stack_access(eip)
            m.reflect(GuestFault(Vector.SS if stack else Vector.GP, 0), eip)
            return
        ring3 = m.vcpu.cpl == 3
        fault = self._walk_and_fill(vaddr, write, ring3, eip, counted)
        if isinstance(fault, ProtectedWrite):
            # A store the VMM can carry out is, unless the guest is rewriting the page
            # wholesale: then, or for another instruction, the page is given up if nothing
            # needs it protected once the shadows built from it are dropped.
            frame = fault.paddr & FRAME
            flood = m.mmu.write_flood(frame)
            if not flood and self._emulate_store(fault, eip):
                return
            if m.mmu.release(frame, vaddr, eip):
                fault = self._walk_and_fill(vaddr, write, ring3, eip, counted)
            elif flood and self._emulate_store(fault, eip):
                return
        if fault is None:
            # The instruction runs again and Unicorn counts it again, unless the fault came
            # from fetching it: then Unicorn had not counted it yet.
            m.restarts += counted
            m.sync_exits()   # a breakpoint on the page just mapped becomes an exit
            return
        if isinstance(fault, ProtectedWrite):
            # Let this one instruction write the page, then protect it again and drop the
            # shadows built from it.
            m.mmu.allow_write_once(vaddr, ring3)
            m.restarts += 1
            m.after_step.append(lambda: self.after_protected_write(fault, ring3, eip))
            m.request_boundary()
            return
        m.emit_at(EventKind.TRAP, eip, vector=int(Vector.PF), insn=m.describe_insn(eip),
                  action="reflect")
        m.reflect(GuestFault(Vector.PF, fault.error_code, cr2=vaddr), eip)

    def _walk_and_fill(self, vaddr: int, write: bool, ring3: bool, eip: int, counted: bool
                       ) -> PageFault | ProtectedWrite | None:
        m = self._m
        m.trap_counted = counted
        try:
            return m.mmu.handle_fault(vaddr, write, ring3, eip)
        except ShadowFull:
            m.mmu.flush(eip, "pool-full")
            m.sync_exits()
            return m.mmu.handle_fault(vaddr, write, ring3, eip)
        except OutsideRam as exc:
            raise GuestStop(StopReason.BAD_MEMORY, str(exc)) from None
        finally:
            m.trap_counted = True

    def _emulate_store(self, write: ProtectedWrite, eip: int) -> bool:
        """Carry out a plain store to a protected page here (pt_store.py), dropping only the
        shadow entries built from what it changed; False: the instruction runs natively."""
        m = self._m
        if m.debug.watching:
            return False    # a watchpoint's Unicorn hook would not see a store made here
        try:
            decoded = self._decoder.decoded(eip)
        except (GuestFault, GuestStop):
            return False
        plan = self._plans.plan(decoded)
        if plan is None:
            return False
        regs = m.regs
        linear = plan.disp
        if plan.base is not None:
            linear += regs.read(plan.base)
        if plan.index is not None:
            linear += regs.read(plan.index) * plan.scale
        linear = (m.tables.base_of(regs.read(plan.seg)) + linear) & 0xFFFFFFFF
        if linear != write.vaddr or linear & 0xFFF > 0xFFC:
            return False    # not the access that faulted, or it crosses into the next page
        paddr = write.paddr
        value = regs.read(plan.reg) if plan.reg is not None else plan.imm
        data = value.to_bytes(4, "little")
        # as a native store would: the descriptor watch's hooks, translated code on the page
        m.descriptor_watch.host_wrote(paddr, data)
        m.uc.ctl_remove_cache(linear, linear + 4)   # the fill just mapped it
        if plan.xchg:
            regs.write(plan.reg, int.from_bytes(m.ram[paddr:paddr + 4], "little"))
        changed = m.mmu.guest_store(paddr, data, eip)
        m.emit_trap(int(Vector.PF), eip, decoded.insn, "emulate")
        regs.write(UC_X86_REG_EIP, eip + plan.size)
        if changed:
            m.sync_exits()
        return True
