"""The Machine: guest RAM, the deprivileged CPU, the run loop and trap dispatch.

Guest code, kernel and user alike, runs at real CPL 3 inside Unicorn. Whatever it may not do
there traps into this monitor, which emulates it against the virtual CPU (vcpu.py) and reports
each step as an event. Front ends (CLI, gdb stub, monitor prompt, tests) use only the public
methods of this class.
"""
from __future__ import annotations

import ctypes
import mmap
import struct
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

from capstone import CS_ARCH_X86, CS_MODE_32, Cs, CsInsn
from capstone.x86 import X86_OP_MEM
from unicorn import (UC_ARCH_X86, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_HOOK_CODE,
                     UC_HOOK_INSN,
                     UC_HOOK_INSN_INVALID, UC_HOOK_INTR, UC_HOOK_MEM_FETCH_UNMAPPED,
                     UC_HOOK_MEM_READ_UNMAPPED, UC_HOOK_MEM_WRITE_UNMAPPED,
                     UC_MODE_32, UC_PROT_ALL, Uc, UcError)
from unicorn.x86_const import (UC_X86_INS_CPUID, UC_X86_INS_IN, UC_X86_INS_OUT,
                               UC_X86_INS_SYSENTER, UC_X86_REG_CR0,
                               UC_X86_REG_CR2, UC_X86_REG_CR3, UC_X86_REG_CR4, UC_X86_REG_CS,
                               UC_X86_REG_DS, UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX,
                               UC_X86_REG_EDX, UC_X86_REG_EFLAGS, UC_X86_REG_EIP, UC_X86_REG_ES,
                               UC_X86_REG_ESP, UC_X86_REG_FS, UC_X86_REG_GDTR,
                               UC_X86_REG_GS, UC_X86_REG_SS)

from . import privileged
from .clock import PORT_IO_CHARGE, TIME_READ_CHARGE, VirtualClock
from .debug_ports import CONSOLE_PORT, EXIT_PORT, DebugConsole, DebugExit
from .debug import Debugger
from .delivery import deliver
from .descriptor_watch import DescriptorWatch
from .descriptors import MONITOR_HOLE, Descriptor
from .events import Event, EventBus, EventKind
from .fast_regs import FastRegisters
from .faults import HAS_ERROR_CODE, GuestFault, GuestStop, StopReason, Vector
from .guest_paging import PageFault
from .guest_registers import read_register, write_register
from .hypercalls import (HYPERCALL_MNEMONIC, HYPERCALL_SIZE, HypercallArgs, HypercallBus,
                         HypercallResult)
from .inputs import InputQueue
from .io_permission import io_allowed
from .loader import BootImage
from .pic import MASTER_PORTS, SLAVE_PORTS, Pic
from .pit import IRQ_LINE as PIT_IRQ
from .pit import PIT_PORTS, SYSTEM_CONTROL_PORT, Pit
from .port_bus import PortBus
from .segments import BOOT_CS, BOOT_DS, SegmentTables, TableLayout
from .shadow_mmu import OutsideRam, ProtectedWrite, ShadowFull, ShadowMmu
from .snapshot import Part, SnapshotStore
from .uc_internals import ExceptionLatch, InstructionCounter, calibrated_layout
from .vcpu import (CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, CR4_TSD, EFLAGS_IF,
                   GuestRegisters, VirtualCpu)

DEFAULT_RAM_MB = 64
QUANTUM = 1 << 20
MONITOR_SIZE = 4 << 20
TABLES = TableLayout(gdt_ring0=MONITOR_HOLE, gdt_ring3=MONITOR_HOLE + 0x10000,
                     ldt_ring0=MONITOR_HOLE + 0x20000, ldt_ring3=MONITOR_HOLE + 0x30000)
TRAMPOLINE = MONITOR_HOLE + 0x40000
TRAMPOLINE_STACK = MONITOR_HOLE + 0x41000
HOLE_PAGE_TABLE = 0x62000                  # maps the hole itself, supervisor-only
SHADOW_POOL = 0x100000                     # shadow page directories and tables: 3 MiB
SHADOW_POOL_PAGES = (MONITOR_SIZE - SHADOW_POOL) // 4096
MONITOR_CS, MONITOR_SS = 0x20, 0x28       # ring-0 selectors used once, by the trampoline
BOOT_ESP = 0x7C00
MAX_RAM_MB = 3072
MAX_FILLS_PER_INSN = 8   # code pages, data pages and a stack page of one instruction, at most

SYSENTER_VECTOR = -1     # trap events of SYSENTER, which is hooked, not trapped
_STACK_MNEMONICS = frozenset({"push", "pop", "pushal", "popal", "pushfd", "popfd", "call",
                              "ret", "retf", "enter", "leave", "iretd", "int", "int3", "into"})
_DATA_SEGS = (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS)
_CONTRIBUTORY = frozenset({Vector.DE, Vector.TS, Vector.NP, Vector.SS, Vector.GP, Vector.PF})


class Decoded:
    """A decoded instruction and what the trap path needs of it (Machine._decode)."""

    __slots__ = ("code", "insn", "mnemonic", "size", "handler")

    def __init__(self, code: bytes, insn: CsInsn, mnemonic: str, size: int,
                 handler: privileged.Handler | None) -> None:
        self.code = code
        self.insn = insn
        self.mnemonic = mnemonic
        self.size = size
        self.handler = handler


@dataclass(frozen=True)
class Stop:
    """Why and where a run ended. ``exit_status`` is what the dbgvm process should exit with."""

    reason: StopReason
    message: str
    eip: int
    icount: int
    exit_status: int


class Machine:
    def __init__(self, ram_mb: int = DEFAULT_RAM_MB,
                 console: Callable[[bytes], None] | None = None) -> None:
        if not 2 <= ram_mb <= MAX_RAM_MB:
            raise ValueError(f"guest RAM must be 2..{MAX_RAM_MB} MiB, not {ram_mb}")
        layout = calibrated_layout()
        self.ram_size = ram_mb << 20
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self._ram_map = mmap.mmap(-1, self.ram_size)
        self.ram = memoryview(self._ram_map)
        ram_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._ram_map))
        uc.mem_map_ptr(0, self.ram_size, UC_PROT_ALL, ram_ptr)
        self._hole_map = mmap.mmap(-1, MONITOR_SIZE)
        self.hole = memoryview(self._hole_map)
        uc.mem_map_ptr(MONITOR_HOLE, MONITOR_SIZE, UC_PROT_ALL,
                       ctypes.addressof(ctypes.c_char.from_buffer(self._hole_map)))
        self.regs = FastRegisters(uc)
        self._latch = ExceptionLatch(uc, layout)
        self._counter = InstructionCounter(uc, layout)

        self.events = EventBus()
        self.vcpu = VirtualCpu()
        self.icount = 0
        self.clock = VirtualClock(self.current_icount)
        self.inputs = InputQueue()
        self.console_output = bytearray()
        self._console = console or self.console_output.extend
        self.ports = PortBus()
        self.hypercalls = HypercallBus()
        self._until_time: int | None = None
        self.pic = Pic()
        self.pit = Pit(self.clock.now, self.pic.raise_irq)
        self.ports.register(MASTER_PORTS, self.pic)
        self.ports.register(SLAVE_PORTS, self.pic)
        self.ports.register(PIT_PORTS, self.pit)
        self.ports.register(range(SYSTEM_CONTROL_PORT, SYSTEM_CONTROL_PORT + 1), self.pit)
        self.ports.register(range(CONSOLE_PORT, CONSOLE_PORT + 1), DebugConsole(self._console))
        self.ports.register(range(EXIT_PORT, EXIT_PORT + 1), DebugExit(self._debug_exit))
        self.clock.add_timer(self.pit)
        self.clock.add_timer(self.inputs)        # inputs scheduled by a replay
        self.mmu = ShadowMmu(self.hole, self.ram, self.ram_size, pool_offset=SHADOW_POOL,
                             pool_pages=SHADOW_POOL_PAGES, hole_pt_offset=HOLE_PAGE_TABLE,
                             emit=self._emit_pt,
                             flush_tlb=lambda: uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE))
        self._restarts = 0
        self._trap_counted = True
        self._in_exception_hook = False
        self._stepping = False
        self.irqs_while_stepping = False
        self._breakpoints: frozenset[int] = frozenset()
        self._exits: frozenset[int] = frozenset()      # what Unicorn holds now
        self._skip_exit: int | None = None
        self._reported: tuple[int, int] | None = None   # (eip, icount) of a reported breakpoint
        self._bp_hooks: dict[int, int] = {}
        self._after_step: list[Callable[[], None]] = []
        self.tables = SegmentTables(uc, TABLES, self.read_linear, self._emit,
                                    lambda: self.trap_eip)
        self.descriptor_watch = DescriptorWatch(
            uc, self.tables, lambda linear: self.mmu.guest_walk(linear, False, False),
            lambda: self.regs.read(UC_X86_REG_EIP))
        self.symbols: dict[str, int] = {}
        self.trap_eip = 0

        self._cs = Cs(CS_ARCH_X86, CS_MODE_32)
        self._cs.detail = True
        self._decoded: dict[int, Decoded] = {}
        self._in_quantum = False
        self._quantum_base = 0
        self._boundary_pos: int | None = None
        self._stop: Stop | None = None
        self._halted = False
        self._shadow_until = 0
        self._planned_deadline: int | None = None   # the timer deadline the quantum runs to
        self._quantum_budget = 0
        self._io_refused: tuple[int, int] | None = None    # (EIP, EAX) of a refused IN/OUT

        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(UC_HOOK_INSN, self._on_in, None, 1, 0, UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._on_cpuid, None, 1, 0, UC_X86_INS_CPUID)
        uc.hook_add(UC_HOOK_INSN, self._on_sysenter, None, 1, 0, UC_X86_INS_SYSENTER)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED |
                    UC_HOOK_MEM_FETCH_UNMAPPED, self._on_unmapped)
        self._enter_ring3()
        self.debug = Debugger(self)
        self.state_parts: list[Part] = []        # devices' state, for snapshots
        self._snapshots: SnapshotStore | None = None
        self._debugger_suspended = False

    # -- start-up ---------------------------------------------------------------------------
    def _enter_ring3(self) -> None:
        """Reach real CPL 3 once, through a one-instruction IRET at CPL 0, and stay there."""
        uc = self.uc
        ring0 = (Descriptor(0x00CF9A000000FFFF), Descriptor(0x00CF92000000FFFF))
        uc.mem_write(TABLES.gdt_ring0 + MONITOR_CS, b"".join(d.pack() for d in ring0))
        uc.reg_write(UC_X86_REG_GDTR, (0, TABLES.gdt_ring0, MONITOR_SS + 7, 0))
        self.regs.write(UC_X86_REG_SS, MONITOR_SS)
        self.regs.write(UC_X86_REG_CS, MONITOR_CS)
        for reg in _DATA_SEGS:
            self.regs.write(reg, MONITOR_SS)
        uc.mem_write(TRAMPOLINE, b"\xcf")  # iret
        uc.mem_write(TRAMPOLINE_STACK, struct.pack("<5I", 0, BOOT_CS | 3, 2, BOOT_ESP,
                                                   BOOT_DS | 3))
        self.regs.write(UC_X86_REG_ESP, TRAMPOLINE_STACK)
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        uc.emu_start(TRAMPOLINE, 0, count=1)
        uc.mem_write(TABLES.gdt_ring0 + MONITOR_CS, bytes(16))
        self.tables.apply_view()
        for reg in _DATA_SEGS:
            self.regs.write(reg, BOOT_DS)
        # Real CR4.TSD makes RDTSC trap at CPL 3 so the monitor can give virtual time; real
        # paging is always on (shadow_mmu.py).
        uc.reg_write(UC_X86_REG_CR4, CR4_TSD)
        self._paging_changed("boot")
        uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_WP | CR0_PG)
        uc.ctl_flush_tb()

    def load(self, image: BootImage) -> None:
        """Place a boot image in guest RAM and set the Multiboot entry registers."""
        for chunk in image.chunks:
            self.ram[chunk.paddr:chunk.paddr + len(chunk.data)] = chunk.data
            tail = chunk.memsz - len(chunk.data)
            if tail > 0:
                start = chunk.paddr + len(chunk.data)
                self.ram[start:start + tail] = bytes(tail)
        self.symbols = dict(image.symbols)
        self.regs.write(UC_X86_REG_EIP, image.entry)
        if image.multiboot:
            self.regs.write(UC_X86_REG_EAX, image.eax)
            self.regs.write(UC_X86_REG_EBX, image.ebx)
        for name, value in image.entry_registers:
            write_register(self, name, value)
        self.uc.ctl_flush_tb()

    # -- time and events ---------------------------------------------------------------------
    def current_icount(self) -> int:
        """Instructions retired so far; inside a trap, those before the trapping instruction."""
        if self._in_quantum:
            # The trapping instruction itself has been counted by Unicorn unless fetching it
            # is what faulted.
            return (self._quantum_base + self._counter.read() - self._restarts
                    - self._trap_counted)
        return self.icount

    def _emit(self, kind: EventKind, eip: int, **fields: object) -> None:
        if self.events.wants(kind):
            self.events.publish(Event(self.current_icount(), kind, eip, fields))

    def emit(self, kind: EventKind, **fields: object) -> None:
        """Publish an event from a device, at the instruction being handled."""
        self._emit(kind, self.trap_eip, **fields)

    def read_tsc(self) -> int:
        """The time-stamp counter (one tick per instruction period), read by a trapped
        RDTSC or RDMSR: the read is charged in virtual time (clock.py). The quantum was sized
        to reach the next timer deadline one instruction per period; when the charge makes
        the rest of it overshoot that deadline, it ends after this instruction, so a timer
        fires at the first instruction boundary at or after its deadline whatever the
        quantum layout (a replay slices time differently from the recorded run)."""
        tsc = self.clock.now()
        self._charge(TIME_READ_CHARGE)
        return tsc

    def _charge(self, periods: int) -> None:
        """Charge virtual time (clock.py) for work done in no instructions; end the quantum
        when that makes the rest of it overshoot the next timer deadline (read_tsc)."""
        self.clock.charge(periods)
        deadline = self.clock.next_deadline()
        if deadline is not None and self._in_quantum and \
                self.clock.now() + self._quantum_base + self._quantum_budget - \
                self.current_icount() > deadline:
            self._request_boundary()

    def power_off(self, status: int, message: str) -> None:
        """A device ends the run on the guest's behalf (the HAL's system POWEROFF)."""
        self._end(StopReason.POWEROFF, message, status)

    def raise_irq(self, line: int) -> None:
        """A device raises an interrupt line of the virtual 8259 pair."""
        self.pic.raise_irq(line)
        if self.vcpu.vif and self.pic.pending():
            self._request_boundary()

    def set_vif(self, value: bool, cause: str) -> None:
        if self.vcpu.vif == value:
            return
        self.vcpu.vif = value
        self.mirror_vif()
        if self.events.wants(EventKind.VIF):
            self._emit(EventKind.VIF, self.trap_eip, **{"from": int(not value), "to": int(value),
                                                        "cause": cause})
        if value and self.pic.pending():
            self._request_boundary()

    def mirror_vif(self) -> None:
        """Keep the real EFLAGS.IF equal to the virtual IF, so that PUSHF (which does not
        trap at CPL 3) shows the guest its own interrupt flag. Safe: Unicorn never takes a
        hardware interrupt, and POPF at CPL 3 with IOPL 0 leaves the real IF alone. Called
        wherever the monitor writes EFLAGS."""
        flags = self.regs.read(UC_X86_REG_EFLAGS)
        wanted = flags | EFLAGS_IF if self.vcpu.vif else flags & ~EFLAGS_IF
        if wanted != flags:
            self.regs.write(UC_X86_REG_EFLAGS, wanted)

    def set_cpl(self, cpl: int) -> None:
        self.vcpu.cpl = cpl
        self.tables.set_ring3_view(cpl == 3)
        self.uc.reg_write(UC_X86_REG_CR3, self.mmu.root(cpl == 3).pd_addr)
        self._sync_exits()

    def interrupt_shadow(self) -> None:
        """After STI, the next instruction runs before any interrupt is taken."""
        self._shadow_until = self.current_icount() + 2

    def halt(self) -> None:
        self._halted = True
        self._request_boundary()

    def _request_boundary(self) -> None:
        """End the quantum after the current instruction (counted as one)."""
        if self._in_quantum and self._boundary_pos is None:
            self._boundary_pos = self._counter.read()
            self._counter.stop_after_current()

    def _end(self, reason: StopReason, message: str, exit_status: int, eip: int | None = None
             ) -> None:
        if self._stop is None:
            eip = self.regs.read(UC_X86_REG_EIP) if eip is None else eip
            self._stop = Stop(reason, message, eip, self.current_icount(), exit_status)
        self._request_boundary()
        if self._in_exception_hook:
            # The faulting instruction would only fault again: stop now, not after it.
            self.uc.emu_stop()

    def _debug_exit(self, status: int) -> None:
        self._end(StopReason.DEBUG_EXIT, f"guest wrote to the debug-exit port: status {status}",
                  status)

    # -- guest memory -----------------------------------------------------------------------
    def _physical(self, linear: int, size: int, write: bool) -> int:
        """Guest-physical address of ``size`` bytes at ``linear`` (within one page when paging
        is on), as a supervisor access; faults are raised as GuestFault."""
        if linear + size > MONITOR_HOLE:
            raise GuestFault(Vector.GP, 0)  # as the truncated segment limit makes it natively
        if self.vcpu.cr0 & CR0_PG:
            t = self.mmu.access(linear, write, user=False)
            if isinstance(t, PageFault):
                raise GuestFault(Vector.PF, t.error_code, cr2=linear)
            paddr = t.paddr
        else:
            paddr = linear
        if paddr + size > self.ram_size:
            raise GuestStop(StopReason.BAD_MEMORY,
                            f"monitor access to physical {paddr:#x}+{size} outside guest RAM "
                            f"({self.ram_size >> 20} MiB)")
        return paddr

    def _pieces(self, linear: int, size: int):
        """Split a linear range at page boundaries when paging is on."""
        if not self.vcpu.cr0 & CR0_PG:
            yield linear, 0, size
            return
        done = 0
        while done < size:
            chunk = min(size - done, 4096 - ((linear + done) & 0xFFF))
            yield linear + done, done, chunk
            done += chunk

    def read_linear(self, linear: int, size: int) -> bytes:
        """Guest linear memory as the guest kernel would read it (faults raised as GuestFault)."""
        out = bytearray()
        for addr, _, chunk in self._pieces(linear, size):
            paddr = self._physical(addr, chunk, False)
            out += self.ram[paddr:paddr + chunk]
        return bytes(out)

    def write_linear(self, linear: int, data: bytes) -> None:
        for addr, offset, chunk in self._pieces(linear, len(data)):
            self.write_physical(self._physical(addr, chunk, True), data[offset:offset + chunk])

    def read_physical(self, paddr: int, size: int) -> bytes:
        if paddr < 0 or paddr + size > self.ram_size:
            raise ValueError(f"physical range {paddr:#x}+{size} is outside guest RAM")
        return bytes(self.ram[paddr:paddr + size])

    def write_physical(self, paddr: int, data: bytes) -> None:
        """A write from outside the guest's instruction stream (debugger, device DMA). It
        keeps the machine coherent as a guest store would: translated code on those bytes is
        dropped, and shadow entries built from a guest page table or descriptor page written
        here are zapped (the descriptor tables re-validated)."""
        if paddr < 0 or paddr + len(data) > self.ram_size:
            raise ValueError(f"physical range {paddr:#x}+{len(data)} is outside guest RAM")
        if not data:
            return
        self.ram[paddr:paddr + len(data)] = data
        # Unicorn translates the start of the range it invalidates as a *linear* address
        # through the CPU's page tables (and an unmapped one corrupts its exception state).
        # RAM is one block at guest-physical 0, so the range stays contiguous after that.
        ring3 = self.vcpu.cpl == 3
        entry = self.mmu.shadow_entry(paddr, ring3)
        if entry is not None and entry & 1 and (entry ^ paddr) & ~0xFFF == 0:
            self.uc.ctl_remove_cache(paddr, paddr + len(data))   # mapped one to one already
        else:
            offset = paddr & 0xFFF
            with self.mmu.alias(paddr - offset, ring3) as linear:
                self.uc.ctl_remove_cache(linear + offset, linear + offset + len(data))
        if self.mmu.host_wrote(paddr, len(data), self.trap_eip):
            self._sync_exits()
        self.descriptor_watch.host_wrote(paddr, data)

    # -- control registers ------------------------------------------------------------------
    def read_cr(self, index: int) -> int:
        vcpu = self.vcpu
        values = {0: vcpu.cr0, 2: vcpu.cr2, 3: vcpu.cr3, 4: vcpu.cr4}
        if index not in values:
            raise GuestFault(Vector.UD)
        return values[index]

    def write_cr(self, index: int, value: int) -> None:
        vcpu = self.vcpu
        if index == 0:
            if not value & CR0_PE:
                raise GuestStop(StopReason.UNSUPPORTED, "clearing CR0.PE (real mode) is not "
                                "supported")
            old, vcpu.cr0 = vcpu.cr0, value | CR0_ET
            if (old ^ vcpu.cr0) & (CR0_PG | CR0_WP) and (old | vcpu.cr0) & CR0_PG:
                self._paging_changed("cr0")
        elif index == 2:
            vcpu.cr2 = value
        elif index == 3:
            vcpu.cr3 = value
            if vcpu.cr0 & CR0_PG:
                self._paging_changed("cr3")
        elif index == 4:
            if value & CR4_PAE:
                raise GuestStop(StopReason.UNSUPPORTED, "PAE paging (CR4.PAE) is not supported")
            old, vcpu.cr4 = vcpu.cr4, value
            if (old ^ value) & CR4_PSE and vcpu.cr0 & CR0_PG:
                self._paging_changed("cr4")
        else:
            raise GuestFault(Vector.UD)

    def _paging_changed(self, cause: str) -> None:
        """Guest paging mode or CR3 changed: flush the shadow and point the CPU at it."""
        vcpu = self.vcpu
        self.mmu.configure(bool(vcpu.cr0 & CR0_PG), vcpu.cr3, bool(vcpu.cr0 & CR0_WP),
                           bool(vcpu.cr4 & CR4_PSE), self.trap_eip, cause)
        self.uc.reg_write(UC_X86_REG_CR3, self.mmu.root(vcpu.cpl == 3).pd_addr)
        self.descriptor_tables_moved()
        self._sync_exits()

    def descriptor_tables_moved(self) -> None:
        """The guest loaded a GDT/LDT or changed paging: watch the bytes its tables occupy,
        so that a rewritten descriptor is noticed (descriptor_watch.py)."""
        self.descriptor_watch.tables_moved()

    def _after_protected_write(self, write: ProtectedWrite, ring3: bool, eip: int) -> None:
        self.mmu.after_protected_write(write.vaddr, write.paddr, ring3, eip)
        self._sync_exits()

    def _emit_pt(self, op: str, eip: int, **fields: object) -> None:
        self._emit(EventKind.PT, eip, op=op, **fields)

    def invlpg(self, linear: int) -> None:
        self.mmu.invlpg(linear, self.trap_eip)
        self._sync_exits()

    def _is_fetch(self, vaddr: int, eip: int) -> bool:
        """Did fetching the instruction at EIP fault (rather than one of its data reads)?
        A page the instruction lies on cannot fault for a read once fetched, so a read fault
        inside the instruction's own bytes is its fetch."""
        start = self.tables.base_of(self.regs.read(UC_X86_REG_CS)) + eip
        if not start & ~0xFFF <= vaddr < ((start + 15) & ~0xFFF) + 0x1000:
            return False
        if vaddr & ~0xFFF == start & ~0xFFF:
            return True
        try:
            length = self._decode(eip).size   # through the guest's tables, not the shadow
        except (GuestFault, GuestStop):
            return True
        return vaddr < start + length

    def _page_fault(self, error_code: int, eip: int) -> None:
        """A #PF under the shadow: fill and restart, or reflect to the guest."""
        vaddr = self.regs.read(UC_X86_REG_CR2)
        write = bool(error_code & 2)
        counted = write or not self._is_fetch(vaddr, eip)
        if counted:
            self._latch.settle_flags()   # the instruction had started: see uc_internals, 3
        if vaddr >= MONITOR_HOLE:
            # beyond the truncated segment limit, as the hardware would see it: #SS(0) for a
            # stack access, else #GP(0)
            self._emit(EventKind.TRAP, eip, vector=int(Vector.PF),
                       insn=self.describe_insn(eip), action="reflect")
            stack = self._stack_access(eip)
            self._reflect(GuestFault(Vector.SS if stack else Vector.GP, 0), eip)
            return
        ring3 = self.vcpu.cpl == 3
        self._trap_counted = counted
        try:
            fault = self.mmu.handle_fault(vaddr, write, ring3, eip)
        except ShadowFull:
            self.mmu.flush(eip, "pool-full")
            self._sync_exits()
            fault = self.mmu.handle_fault(vaddr, write, ring3, eip)
        except OutsideRam as exc:
            raise GuestStop(StopReason.BAD_MEMORY, str(exc)) from None
        finally:
            self._trap_counted = True
        if fault is None:
            # The instruction runs again and Unicorn counts it again, unless the fault came
            # from fetching it: then Unicorn had not counted it yet.
            self._restarts += counted
            self._sync_exits()   # a breakpoint on the page just mapped becomes an exit
            return
        if isinstance(fault, ProtectedWrite):
            # Let this one instruction write the descriptor page, then protect it again and
            # re-validate what the guest wrote.
            self.mmu.allow_write_once(vaddr, ring3)
            self._restarts += 1
            self._after_step.append(lambda: self._after_protected_write(fault, ring3, eip))
            self._request_boundary()
            return
        self._emit(EventKind.TRAP, eip, vector=int(Vector.PF), insn=self.describe_insn(eip),
                   action="reflect")
        self._reflect(GuestFault(Vector.PF, fault.error_code, cr2=vaddr), eip)

    # -- registers ---------------------------------------------------------------------------
    def registers(self) -> GuestRegisters:
        """A snapshot of the guest's register file, as the guest sees it."""
        values = {f.name: read_register(self, f.name) for f in fields(GuestRegisters)}
        return GuestRegisters(**{**values, "vif": bool(values["vif"])})

    def write_register(self, name: str, value: int) -> None:
        """Set any register by name, as the guest sees it (RegisterError when impossible)."""
        write_register(self, name, value)

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, eip: int) -> CsInsn:
        """The instruction at CS:EIP, as the guest sees its memory now."""
        return self._decode(eip).insn

    def _decode(self, eip: int) -> Decoded:
        """decode(), with what the trap path needs of the instruction (capstone's properties
        cost ~0.5 us a call), cached by linear address and checked against memory."""
        linear = self.tables.base_of(self.regs.read(UC_X86_REG_CS)) + eip
        cached = self._decoded.get(linear)
        if cached is not None:
            code = cached.code
            # The instruction trapped, so the shadow maps its page: compare the bytes there
            # (a Python walk of the guest's tables was 40% of a trap's cost).
            entry = self.mmu.shadow_entry(linear, self.vcpu.cpl == 3)
            if entry is not None and entry & 1 and (linear & 0xFFF) + len(code) <= 0x1000:
                paddr = (entry & ~0xFFF) | (linear & 0xFFF)
                if self.ram[paddr:paddr + len(code)] == code:
                    return cached
            elif self.read_linear(linear, len(code)) == code:
                return cached
        code = self._read_code(linear)
        insn = next(self._cs.disasm(code, eip, 1), None)
        if insn is None:
            raise GuestFault(Vector.UD)
        decoded = Decoded(code[:insn.size], insn, insn.mnemonic, insn.size,
                          privileged.HANDLERS.get(insn.mnemonic))
        self._decoded[linear] = decoded
        return decoded

    def _read_code(self, linear: int) -> bytes:
        """Up to 15 bytes of code at ``linear`` (the longest x86 instruction), through the
        guest's paging: the first page must be readable (or the fetch faults), the bytes on a
        following page only when it is mapped (an instruction may end just before it)."""
        size = min(15, MONITOR_HOLE - linear)
        first = min(size, 4096 - (linear & 0xFFF))
        code = self.read_linear(linear, first)
        if first < size:
            try:
                code += self.read_linear(linear + first, size - first)
            except (GuestFault, GuestStop):
                pass
        return code

    def describe_insn(self, eip: int) -> str:
        try:
            insn = self.decode(eip)
            return f"{insn.mnemonic} {insn.op_str}".strip()
        except (GuestFault, GuestStop):
            return "(unreadable)"

    # -- trap dispatch -----------------------------------------------------------------------
    def _stack_access(self, eip: int) -> bool:
        """Does the instruction at ``eip`` reach memory through SS (an implicit stack access,
        an SS override, or a base of ESP/EBP)? Its segment-limit faults are #SS, not #GP."""
        try:
            insn = self.decode(eip)
        except (GuestFault, GuestStop):
            return False
        if insn.mnemonic.split()[0] in _STACK_MNEMONICS:
            return True
        for op in insn.operands:
            if op.type == X86_OP_MEM:
                seg = insn.reg_name(op.mem.segment) if op.mem.segment else None
                base = insn.reg_name(op.mem.base) if op.mem.base else None
                if seg == "ss" or (seg is None and base in ("esp", "ebp")):
                    return True
        return False

    def _on_intr(self, uc: Uc, intno: int, _: object) -> None:
        self._in_exception_hook = True
        latch = self._latch
        latch.begin()
        eip = self.regs.read(UC_X86_REG_EIP)
        try:
            if latch.is_software_int():
                length = 1 if intno in (3, 4) and self._one_byte_int(eip - 1) else 2
                self.trap_eip = eip - length
                self._emit(EventKind.TRAP, self.trap_eip, vector=intno,
                           insn=self.describe_insn(self.trap_eip), action="deliver")
                self._deliver_guarded(intno, eip, software=True)
            else:
                self.trap_eip = eip
                if intno == Vector.PF:
                    self._page_fault(latch.error_code(), eip)
                else:
                    latch.settle_flags()
                    self._handle_fault(intno, latch.error_code(), eip)
        except GuestStop as stop:
            self._guest_stop(stop, self.trap_eip)
        except Exception as exc:  # noqa: BLE001 - the host must survive any guest action
            self._monitor_error(exc, self.trap_eip)
        finally:
            self._latch.rearm()
            self._in_exception_hook = False

    def _one_byte_int(self, eip: int) -> bool:
        """Was the software interrupt that returns to ``eip + 1`` INT3 or INTO (one byte),
        rather than INT n (two)? Read through the guest's paging: EIP is linear."""
        linear = self.tables.base_of(self.regs.read(UC_X86_REG_CS)) + eip
        try:
            return self.read_linear(linear & 0xFFFFFFFF, 1) in (b"\xcc", b"\xce")
        except (GuestFault, GuestStop):
            return False

    def _handle_fault(self, vector: int, error_code: int, eip: int) -> None:
        if vector in (Vector.GP, Vector.NP) and self.vcpu.cpl == 0 or (
                vector == Vector.GP and self.vcpu.cpl <= self.vcpu.iopl):
            try:
                decoded = self._decode(eip)
            except GuestFault:
                decoded = None   # not an instruction the monitor knows: not one it emulates
            handler = decoded.handler if decoded is not None else None
            if handler is not None and (self.vcpu.cpl == 0 or decoded.mnemonic in ("cli", "sti")):
                insn = decoded.insn
                try:
                    jumped = handler(self, insn)
                except GuestFault as fault:
                    self._emit_trap(vector, eip, insn, "reflect")
                    self._reflect(fault, eip)
                    return
                if jumped is not None:
                    self._emit_trap(vector, eip, insn, "emulate")
                    if not jumped:
                        self.regs.write(UC_X86_REG_EIP, eip + decoded.size)
                    return
            if vector == Vector.GP and error_code & 0xFFFC and \
                    self.tables.refresh_entry(error_code, eip):
                return  # the guest edited its table since: retry with the fresh copy
        self._emit(EventKind.TRAP, eip, vector=vector, insn=self.describe_insn(eip),
                   action="reflect")
        self._reflect(GuestFault(vector, error_code), eip)

    def _emit_trap(self, vector: int, eip: int, insn: CsInsn, action: str) -> None:
        if self.events.wants(EventKind.TRAP):
            self._emit(EventKind.TRAP, eip, vector=vector,
                       insn=f"{insn.mnemonic} {insn.op_str}".strip(), action=action)

    def _reflect(self, fault: GuestFault, eip: int) -> None:
        """Deliver a fault the guest caused to the guest itself, at the faulting instruction."""
        if fault.vector == Vector.GP and fault.error_code & 0xFFFC:
            reason = self.tables.refusal(fault.error_code)
            if reason:
                self._emit(EventKind.DESC, eip, table="ldt" if fault.error_code & 4 else "gdt",
                           op="fault", index=fault.error_code >> 3, reason=reason)
        if fault.cr2 is not None:
            self.vcpu.cr2 = fault.cr2
        code = fault.error_code if fault.vector in HAS_ERROR_CODE else None
        self._deliver_guarded(fault.vector, eip, error_code=code)

    def _deliver_guarded(self, vector: int, return_eip: int, *, error_code: int | None = None,
                         software: bool = False, external: bool = False) -> None:
        """Deliver, escalating to #DF and then to a triple-fault stop as the CPU does."""
        try:
            deliver(self, vector, return_eip, error_code=error_code, software=software,
                    external=external)
        except GuestFault as fault:
            if vector == Vector.DF:
                raise GuestStop(StopReason.TRIPLE_FAULT,
                                f"triple fault: delivering #DF raised vector {fault.vector} "
                                f"error {fault.error_code:#x}") from None
            # SDM vol. 3 table 6-5: a contributory fault (or #PF) while delivering one of
            # those is a double fault; anything else is delivered in turn.
            benign = software or external or vector not in _CONTRIBUTORY
            fault_eip = self.trap_eip if software else return_eip
            if benign or fault.vector not in _CONTRIBUTORY:
                self._emit(EventKind.TRAP, fault_eip, vector=fault.vector,
                           insn=self.describe_insn(fault_eip), action="reflect")
                self._reflect(fault, fault_eip)
            else:
                self._emit(EventKind.TRAP, fault_eip, vector=int(Vector.DF),
                           insn=self.describe_insn(fault_eip), action="reflect")
                try:
                    self._deliver_guarded(Vector.DF, return_eip, error_code=0)
                except GuestStop as stop:
                    if stop.reason is not StopReason.DOUBLE_FAULT:
                        raise
                    raise GuestStop(stop.reason, f"{stop.message}: delivering vector "
                                    f"{vector} raised vector {fault.vector} error "
                                    f"{fault.error_code:#x}; frame: {self._frame()}") from None

    def _frame(self) -> str:
        """The registers a crash report needs, in one line."""
        r = self.registers()
        return (f"cs:eip {r.cs:#06x}:{r.eip:#010x} ss:esp {r.ss:#06x}:{r.esp:#010x} "
                f"eflags {r.eflags:#010x} cr2 {r.cr2:#010x} cr3 {r.cr3:#010x}")

    def _on_invalid(self, uc: Uc, _: object) -> bool:
        self._in_exception_hook = True
        eip = self.regs.read(UC_X86_REG_EIP)
        self.trap_eip = eip
        try:
            if self._hypercall(eip):
                return True
            self._emit(EventKind.TRAP, eip, vector=int(Vector.UD), insn=self.describe_insn(eip),
                       action="reflect")
            self._deliver_guarded(Vector.UD, eip)
        except GuestStop as stop:
            self._guest_stop(stop, eip)
        except Exception as exc:  # noqa: BLE001
            self._monitor_error(exc, eip)
        finally:
            self._latch.rearm()
            self._in_exception_hook = False
        return True

    def _hypercall(self, eip: int) -> bool:
        """A ``vmcall`` at virtual CPL 0 with a handler registered: perform it and step over
        it. Anything else (no handler, CPL 3, another undefined opcode) is the guest's #UD."""
        handler = self.hypercalls.handler
        if handler is None or self.vcpu.cpl != 0:
            return False
        try:
            if self.decode(eip).mnemonic != HYPERCALL_MNEMONIC:
                return False
        except (GuestFault, GuestStop):
            return False
        read = self.regs.read
        result: HypercallResult = handler(HypercallArgs(
            read(UC_X86_REG_EAX), read(UC_X86_REG_EBX), read(UC_X86_REG_ECX),
            read(UC_X86_REG_EDX)))
        for reg, value in ((UC_X86_REG_EAX, result.eax), (UC_X86_REG_EBX, result.ebx),
                           (UC_X86_REG_ECX, result.ecx), (UC_X86_REG_EDX, result.edx)):
            if value is not None:
                self.regs.write(reg, value & 0xFFFFFFFF)
        self.regs.write(UC_X86_REG_EIP, eip + HYPERCALL_SIZE)
        return True

    def _refuse_io(self) -> None:
        """IN/OUT the virtual CPL may not use (io_permission.py): the hook cannot fault, so it
        leaves registers as they were, ends the quantum after the instruction, and
        _io_refused then puts EIP back and delivers #GP(0) there."""
        self._io_refused = (self.regs.read(UC_X86_REG_EIP), self.regs.read(UC_X86_REG_EAX))
        self._request_boundary()

    def _io_refused_fault(self) -> None:
        eip, eax = self._io_refused
        self._io_refused = None
        self.regs.write(UC_X86_REG_EIP, eip)
        self.regs.write(UC_X86_REG_EAX, eax)
        self.trap_eip = eip
        try:
            self._emit(EventKind.TRAP, eip, vector=int(Vector.GP), insn=self.describe_insn(eip),
                       action="reflect")
            self._deliver_guarded(Vector.GP, eip, error_code=0)
        except GuestStop as stop:
            self._guest_stop(stop, eip)

    def _on_in(self, uc: Uc, port: int, size: int, _: object) -> int:
        try:
            if not io_allowed(self.vcpu, self.read_linear, port, size):
                self._refuse_io()
                return self.regs.read(UC_X86_REG_EAX)
            self._charge(PORT_IO_CHARGE)
            value = self.ports.read(port, size)
            claimed = value is not None
            if value is None:
                value = (1 << (8 * size)) - 1
            self._emit(EventKind.IO, self.regs.read(UC_X86_REG_EIP), port=port, size=size,
                       dir="in", value=value, **({} if claimed else {"unclaimed": True}))
            return value
        except Exception as exc:  # noqa: BLE001
            self._monitor_error(exc, self.regs.read(UC_X86_REG_EIP))
            return 0

    def _on_out(self, uc: Uc, port: int, size: int, value: int, _: object) -> None:
        try:
            if not io_allowed(self.vcpu, self.read_linear, port, size):
                self._refuse_io()
                return
            self._charge(PORT_IO_CHARGE)
            value &= (1 << (8 * size)) - 1
            claimed = self.ports.write(port, size, value)
            self._emit(EventKind.IO, self.regs.read(UC_X86_REG_EIP), port=port, size=size,
                       dir="out", value=value, **({} if claimed else {"unclaimed": True}))
            # an interrupt to take now, or a timer the guest reprogrammed (the quantum was
            # sized to the old deadline): end the quantum, so that what happens next does
            # not depend on where quanta happen to end (replays slice time differently)
            if self.vcpu.vif and self.pic.pending() or \
                    self.clock.next_deadline() != self._planned_deadline:
                self._request_boundary()
        except Exception as exc:  # noqa: BLE001
            self._monitor_error(exc, self.regs.read(UC_X86_REG_EIP))

    def _on_cpuid(self, uc: Uc, _: object) -> bool:
        privileged.cpuid(self)
        return True

    def _on_sysenter(self, uc: Uc, _: object) -> None:
        """SYSENTER, emulated (privileged.sysenter). Unicorn adds the instruction's 2 bytes to
        whatever EIP the hook leaves, so the hook leaves the target minus 2."""
        eip = self.regs.read(UC_X86_REG_EIP)
        self.trap_eip = eip
        try:
            insn = self.decode(eip)
            try:
                privileged.sysenter(self)
                self._emit_trap(SYSENTER_VECTOR, eip, insn, "emulate")
            except GuestFault as fault:
                self._emit_trap(int(fault.vector), eip, insn, "reflect")
                self._reflect(fault, eip)
        except GuestStop as stop:
            self._guest_stop(stop, eip)
        except Exception as exc:  # noqa: BLE001
            self._monitor_error(exc, eip)
        self.regs.write(UC_X86_REG_EIP, (self.regs.read(UC_X86_REG_EIP) - 2) & 0xFFFFFFFF)

    def _on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int,
                     _: object) -> bool:
        eip = self.regs.read(UC_X86_REG_EIP)
        self._end(StopReason.BAD_MEMORY,
                  f"guest access to physical {address:#x} (size {size}) outside guest RAM at "
                  f"eip {eip:#010x}: {self.describe_insn(eip)}", 1, eip)
        return False

    def _guest_stop(self, stop: GuestStop, eip: int) -> None:
        """End the run for a GuestStop raised while handling the instruction at ``eip``. A
        triple fault resets a PC; dbgvm ends the run there with status 0, as QEMU does with
        -no-reboot (Linux reboots this way after a panic with panic=N)."""
        if stop.reason is StopReason.TRIPLE_FAULT:
            self._end(stop.reason, "guest reset: " + self._stop_message(stop.message, eip), 0,
                      eip)
        else:
            self._end(stop.reason, self._stop_message(stop.message, eip), 1, eip)

    def _stop_message(self, message: str, eip: int) -> str:
        return f"{message} at eip {eip:#010x}: {self.describe_insn(eip)}"

    def _monitor_error(self, exc: Exception, eip: int) -> None:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self._end(StopReason.MONITOR_ERROR,
                  f"monitor error at eip {eip:#010x} ({self.describe_insn(eip)}): {detail}", 1,
                  eip)

    # -- the run loop ------------------------------------------------------------------------
    def _boundary(self) -> None:
        """Between quanta: timers, inputs, waking from HLT, and taking an interrupt."""
        self.clock.expire()
        if self.inputs.pending():
            self.inputs.apply(self.icount, self.clock.now())
        eip = self.regs.read(UC_X86_REG_EIP)
        self.trap_eip = eip
        if self._halted:
            if not self.vcpu.vif:
                self._end(StopReason.HALTED, f"HLT with the virtual IF clear at eip {eip - 1:#010x}"
                          ": nothing can wake the CPU", 0, eip)
                return
            if not self._idle(eip):
                return
            self._halted = False
        if self.icount < self._shadow_until or not self.vcpu.vif or not self.pic.pending() \
                or self._stepping:
            return
        acked = self.pic.acknowledge()
        if acked is None:
            return
        vector, line = acked
        self._emit(EventKind.IRQ, eip, vector=vector, line=line)
        try:
            self._deliver_guarded(vector, eip, external=True)
        except GuestStop as stop:
            self._guest_stop(stop, eip)
        except Exception as exc:  # noqa: BLE001
            self._monitor_error(exc, eip)

    @property
    def halted(self) -> bool:
        """In HLT, waiting for an interrupt."""
        return self._halted

    def wakeup_time(self) -> int | None:
        """Virtual time of the next timer interrupt that can reach the CPU, or of the next
        scheduled (replayed) input (None: nothing will come)."""
        deadlines = [self.inputs.next_deadline(),
                     None if self.pic.masked(PIT_IRQ) else self.pit.next_deadline()]
        return min((d for d in deadlines if d is not None), default=None)

    def _idle(self, eip: int) -> bool:
        """HLT with the virtual IF set: let virtual time pass until an interrupt is pending
        (True), or end the run (False). Time jumps from timer deadline to timer deadline
        (or a replayed input's time). A run with ``until_time`` idles no further than that
        and ends with TIME_SLICE: a front end waiting for outside input (dbgvm/domains.py)
        runs in slices and decides there how long to wait."""
        while not self.pic.pending():
            if self.inputs.pending():
                self.inputs.apply(self.icount, self.clock.now())
                continue
            deadline = self.wakeup_time()
            until = self._until_time
            if until is not None and (deadline is None or deadline > until):
                self.clock.idle_until(until)
                self._end(StopReason.TIME_SLICE, "idle to the end of the time slice", 0, eip)
                return False
            if deadline is None:
                self._end(StopReason.HALTED, f"HLT at eip {eip - 1:#010x} with no timer "
                          "interrupt that can arrive and none pending", 0, eip)
                return False
            self.clock.idle_until(deadline)
            self.clock.expire()
        return True

    def run(self, max_insns: int | None = None, *,
            interrupted: Callable[[], bool] | None = None,
            until_time: int | None = None, pause: bool = False) -> Stop:
        """Run until the guest ends, something stops it, or ``max_insns`` more instructions.
        ``interrupted`` is polled between quanta (a debugger's Ctrl-C). With ``until_time``
        (virtual time, see clock.py) the run also ends, with TIME_SLICE, when the virtual
        clock reaches it: how several VMs are run side by side in lockstep. ``pause``: the
        instruction limit is the caller's own stopping point inside a longer run (no `stop`
        event for it)."""
        limit = None if max_insns is None else self.icount + max_insns
        self._until_time = until_time
        self._stop = None
        self._step_off_breakpoint()
        while self._stop is None:
            if interrupted is not None and interrupted():
                self._end(StopReason.REQUESTED, "stopped by the debugger", 0)
                break
            self._boundary()
            if self._stop is not None:
                break
            budget = max(1, self._shadow_until - self.icount) if self.icount < \
                self._shadow_until else QUANTUM
            if self._after_step:
                budget = 1
            deadline = self._planned_deadline = self.clock.next_deadline()
            if deadline is not None:
                budget = min(budget, max(1, deadline - self.clock.now()))
            if until_time is not None:
                if self.clock.now() >= until_time:
                    self._end(StopReason.TIME_SLICE, "end of the time slice", 0)
                    break
                budget = min(budget, until_time - self.clock.now())
            if limit is not None:
                if self.icount >= limit:
                    self._end(StopReason.MAX_INSNS, f"instruction limit reached "
                              f"({max_insns} instructions)", 0)
                    break
                budget = min(budget, limit - self.icount)
            executed = self._run_quantum(budget)
            if self._after_step and executed and budget == 1:
                for action in self._after_step:
                    action()
                self._after_step.clear()
            if self._stop is not None:
                break
        stop = self._stop
        if stop.reason is StopReason.WATCHPOINT:
            # stopped after the accessing instruction completed: report where the CPU is now
            stop = self._stop = replace(stop, eip=self.regs.read(UC_X86_REG_EIP),
                                        icount=self.icount)
        if stop.reason is StopReason.BREAKPOINT:
            self.report_breakpoint_here()
        if stop.reason is not StopReason.TIME_SLICE and not (
                pause and stop.reason is StopReason.MAX_INSNS):   # a pause, not an end
            self._emit(EventKind.STOP, stop.eip, reason=stop.reason.value, message=stop.message)
        return stop

    def report_breakpoint_here(self) -> None:
        """The debugger has reported the breakpoint at the current instruction: resuming
        runs it instead of stopping there again. (Run from a breakpoint nobody reported,
        e.g. after a run that ended exactly there for another reason, stops at once.)"""
        self._reported = (self.regs.read(UC_X86_REG_EIP), self.icount)

    def step(self) -> Stop:
        """Execute exactly one instruction. Interrupts are not taken before it unless
        ``irqs_while_stepping`` is set (QEMU's gdbstub NOIRQ default)."""
        self._stepping = not self.irqs_while_stepping
        self.report_breakpoint_here()             # a step always runs the instruction
        try:
            stop = self.run(1)
        finally:
            self._stepping = False
        if stop.reason is StopReason.MAX_INSNS:
            stop = Stop(StopReason.STEP, "stepped one instruction", stop.eip, stop.icount, 0)
            self._stop = stop
        return stop

    def set_breakpoints(self, addresses: frozenset[int]) -> None:
        """Stop before executing any of these linear addresses (see _sync_exits)."""
        self._breakpoints = addresses
        self._sync_exits()

    def _sync_exits(self) -> None:
        """Breakpoints are Unicorn *exits*: checked in translated code, so free while not hit
        (code hooks are walked on every instruction: 100 cost 17x). But at the end of each
        emu_start Unicorn translates every exit, and the byte before it, through the current
        page tables, and corrupts its exception state if that faults. So Unicorn only ever
        holds the breakpoints whose pages the current shadow root maps; this is re-synced
        before each quantum and whenever a hook changes the shadow, and a breakpoint page
        filled later gets its exit then. A breakpoint whose page is mapped but whose previous
        page is not (the first byte of a page) gets a ranged code hook instead."""
        if not self._breakpoints and not self._exits and not self._bp_hooks:
            return
        ring3 = self.vcpu.cpl == 3

        def mapped(addr: int) -> bool:
            entry = self.mmu.shadow_entry(addr & 0xFFFFFFFF, ring3)
            return entry is not None and bool(entry & 1)
        live = [bp for bp in self._breakpoints if bp != self._skip_exit and mapped(bp)]
        wanted = frozenset(bp for bp in live if mapped(bp - 1))
        # a breakpoint on the first byte of a page whose previous page is not mapped cannot
        # be an exit: it gets a code hook ranged to its address instead
        hooked = frozenset(live) - wanted
        changed = wanted != self._exits or hooked != frozenset(self._bp_hooks)
        for bp in frozenset(self._bp_hooks) - hooked:
            self.uc.hook_del(self._bp_hooks.pop(bp))
        for bp in hooked - frozenset(self._bp_hooks):
            self._bp_hooks[bp] = self.uc.hook_add(UC_HOOK_CODE, self._on_hooked_breakpoint,
                                                  None, bp, bp)
        if wanted != self._exits:
            self._exits = wanted
            self.uc.ctl_set_exits(sorted(wanted))
        if changed:
            self.uc.ctl_flush_tb()      # exits and hooks only reach code translated after

    def _on_hooked_breakpoint(self, uc: Uc, address: int, size: int, _: object) -> None:
        if address == self._skip_exit or self._stop is not None:
            return
        self._stop = Stop(StopReason.BREAKPOINT, f"breakpoint at {address:#010x}", address,
                          self.current_icount(), 0)
        if self._boundary_pos is None:
            self._boundary_pos = self._counter.read() - 1   # before this instruction
            self.uc.emu_stop()

    @property
    def breakpoints(self) -> frozenset[int]:
        return self._breakpoints

    @property
    def armed_breakpoints(self) -> frozenset[int]:
        """The breakpoints Unicorn holds as exits now (those whose page is mapped)."""
        return self._exits

    def _step_off_breakpoint(self) -> None:
        """Resuming from a reported breakpoint: run that one instruction without its exit."""
        eip = self.regs.read(UC_X86_REG_EIP)
        if eip not in self._breakpoints:
            return
        if self._reported != (eip, self.icount):
            self._stop = Stop(StopReason.BREAKPOINT, f"breakpoint at {eip:#010x}", eip,
                              self.icount, 0)
            return
        self._skip_exit = eip
        try:
            self._boundary()
            # A shadow fill for the instruction (its code or data page) uses up the one-
            # instruction quantum without retiring it: try again until it retires or leaves.
            for _ in range(MAX_FILLS_PER_INSN):
                if self._stop is not None or self.regs.read(UC_X86_REG_EIP) != eip:
                    break
                if self._run_quantum(1):
                    break
        finally:
            self._skip_exit = None
            self._sync_exits()

    def stop_after_current(self, reason: StopReason, message: str) -> None:
        """From a memory hook: end the run once the instruction in progress completes."""
        if not self._debugger_suspended:
            self._end(reason, message, 0)

    @contextmanager
    def debugger_suspended(self) -> Iterator[None]:
        """Run without stopping at breakpoints, watchpoints or event breakpoints (they stay
        set): how reverse execution re-runs what the debugger already went through."""
        breakpoints, self._debugger_suspended = self._breakpoints, True
        self.set_breakpoints(frozenset())
        try:
            yield
        finally:
            self._debugger_suspended = False
            self.set_breakpoints(breakpoints)

    # -- snapshots -------------------------------------------------------------------------
    def snapshot_store(self) -> SnapshotStore:
        """The machine's snapshots (created on first use: it keeps a copy of guest RAM)."""
        if self._snapshots is None:
            everything_live = frozenset({"_timers", "_consumers", "_observers"})
            parts = [Part("machine", self, include=frozenset({
                         "icount", "_halted", "_shadow_until", "trap_eip", "vcpu"})),
                     Part("clock", self.clock, everything_live),
                     Part("inputs", self.inputs, everything_live),
                     Part("pic", self.pic), Part("pit", self.pit), Part("mmu", self.mmu),
                     Part("tables", self.tables)]
            self._snapshots = SnapshotStore(self.uc, self.ram, self.hole,
                                            parts + self.state_parts, self._after_restore)
        return self._snapshots

    def _after_restore(self) -> None:
        self.mirror_vif()
        self._decoded.clear()
        self._stop = None
        self._after_step.clear()
        self._exits = frozenset({-1})      # whatever Unicorn holds: set the exits again
        self._sync_exits()

    def _run_quantum(self, budget: int) -> int:
        """Run at most ``budget`` instructions; returns how many retired."""
        uc = self.uc
        self._sync_exits()
        self._quantum_base = self.icount
        self._quantum_budget = budget
        self._boundary_pos = None
        self._restarts = 0
        self._in_quantum = True
        try:
            uc.emu_start(self.regs.read(UC_X86_REG_EIP), 0, count=budget)
        except UcError as exc:
            if self._stop is None:
                eip = self.regs.read(UC_X86_REG_EIP)
                self._end(StopReason.MONITOR_ERROR,
                          f"Unicorn error {exc} at eip {eip:#010x}: {self.describe_insn(eip)}", 1,
                          eip)
        finally:
            self._in_quantum = False
        started = self._boundary_pos if self._boundary_pos is not None else \
            min(self._counter.read(), budget)
        executed = started - self._restarts
        self.icount += executed
        if self._io_refused is not None:
            self._io_refused_fault()
        if self._stop is None and self._boundary_pos is None and executed < budget:
            eip = self.regs.read(UC_X86_REG_EIP)
            if eip in self._exits:
                self._stop = Stop(StopReason.BREAKPOINT, f"breakpoint at {eip:#010x}", eip,
                                  self.icount, 0)
        return executed
