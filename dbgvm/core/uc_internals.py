"""Calibrated access to Unicorn 2.1.4 internals that its API does not expose.

1. ``env->old_exception`` is never reset (unicorn #1883, #578): after one handled #GP/#PF/#DE
   the next one is reported as #DF and the third stops emulation silently. The VMM resets
   the field after every exception it handles. The same context blob holds ``env->error_code``
   and ``env->exception_is_int``, which the VMM needs to reflect faults with their error
   code and to tell ``INT n`` from a processor exception of the same vector.
2. ``uc->emu_counter``, the number of instructions started in the current ``emu_start``: it
   lets every event carry the exact count of retired guest instructions even when a hook fires
   in the middle of a quantum.
3. Arithmetic flags after a fault: when any UC_HOOK_CODE covers an instruction (``count=N``
   installs one for every address), Unicorn's translator emits before it the hook call and
   ``gen_compute_eflags``, which leaves the flags materialised in ``env->cc_src`` with
   ``cc_op`` = CC_OP_EFLAGS, but only lazily in the translator (``env->cc_op`` is not stored).
   The instruction's ``insn_start`` already recorded the previous ``cc_op`` (say CC_OP_SUBL
   after a CMP). When the instruction faults, ``restore_state_to_opc`` writes that stale
   ``cc_op`` back (or, for CC_OP_DYNAMIC, leaves an older one): ``cc_src`` now holds EFLAGS
   but is decoded as CMP's second operand, so CF/OF/AF come out wrong both in the hook and
   after the restart (ZF/SF/PF survive: they come from ``cc_dst``). Setting ``env->cc_op`` to
   CC_OP_EFLAGS in the hook is exact, provided the instruction had started, i.e. the fault is
   not a #PF on fetching it (those are raised while translating, before any of its code ran,
   and leave a consistent state). Without a code hook Unicorn is right and this must not be
   applied: dbgvm always runs with ``count=N``.

Offsets are found once per process by calibration on a scratch engine (markers in DR0..DR3 and
in the general registers, a distinctive ``count``), then verified with provoked faults whose
error code is known, and with a CMP whose CF is lost across a fault unless repaired. If the
layout or the behaviour does not match, :class:`UnicornLayoutError` says so and nothing runs.

The fields are read and written in the live CPU state, not through ``uc_context_save`` and
``uc_context_restore`` (each a memcpy of the whole 5.5 KB state and a ctypes call: ~2.9 us per
trap for the pair of saves and the restore, against ~0.1 us). A context is exactly a copy of
``*uc->cpu->env_ptr`` after a small header, so calibration also locates that pointer chain:
the word of the engine holding ``uc->cpu`` and the word of the CPUState holding ``env_ptr``,
found as the only chain that leads to memory equal to a freshly saved context (only mapped
memory is read, per /proc/self/maps), then checked by a register write showing through.
"""
from __future__ import annotations

import bisect
import ctypes
import functools
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import (UC_X86_REG_CS, UC_X86_REG_DR0, UC_X86_REG_DR1, UC_X86_REG_DR2,
                               UC_X86_REG_DR3, UC_X86_REG_DS, UC_X86_REG_EAX, UC_X86_REG_EBX,
                               UC_X86_REG_ECX, UC_X86_REG_EDX, UC_X86_REG_EFLAGS,
                               UC_X86_REG_EIP, UC_X86_REG_ESP, UC_X86_REG_GDTR, UC_X86_REG_SS)


class UnicornLayoutError(RuntimeError):
    """The installed Unicorn does not have the internal layout dbgvm was calibrated for."""


_DR_REGS = (UC_X86_REG_DR0, UC_X86_REG_DR1, UC_X86_REG_DR2, UC_X86_REG_DR3)
_DR_MARKERS = (0x5EEDD001, 0x5EEDD002, 0x5EEDD003, 0x5EEDD004)  # DRn are 32-bit here
# CPUX86State: int error_code; int exception_is_int; target_ulong exception_next_eip;
# target_ulong dr[8]; void *cpu_breakpoint[4]; int old_exception  (target_ulong is 64-bit:
# Unicorn builds its x86 target as x86_64).
_ERROR_CODE_FROM_DR0 = -16
_IS_INT_FROM_DR0 = -12
_OLD_EXCEPTION_FROM_DR0 = 8 * 8 + 4 * 8
_GPRS = (UC_X86_REG_EAX, UC_X86_REG_ECX, UC_X86_REG_EDX, UC_X86_REG_EBX)
_GPR_MARKERS = (0x5EEDC001, 0x5EEDC002, 0x5EEDC003, 0x5EEDC004)
_EIP_MARKER = 0x5EEDC005
# CPUX86State starts: target_ulong regs[16], eip, eflags, cc_dst, cc_src, cc_src2; uint32_t cc_op
_EIP_FROM_REGS = 16 * 8
_CC_SRC_FROM_REGS = 19 * 8
_CC_OP_FROM_REGS = 21 * 8
CC_OP_EFLAGS = 1    # enum CCOp: CC_OP_DYNAMIC, CC_OP_EFLAGS, CC_OP_MULB..Q, ADDB..Q, ADCB..Q, SUBB..
CC_OP_SUBL = 16
_COUNT_MARKER = 0x0DB65EED00012345
_COUNTER_SCAN_LIMIT = 1 << 16
_WORD = ctypes.sizeof(ctypes.c_size_t)


class UnicornError(RuntimeError):
    """A Unicorn call failed."""


def _check(status: int, what: str) -> None:
    if status != 0:
        raise UnicornError(f"{what} failed: {uclib.uc_strerror(status).decode()}")


@dataclass(frozen=True)
class ExceptionInfo:
    """What Unicorn's CPU state says about the exception being handled."""

    error_code: int
    is_software_int: bool


@dataclass(frozen=True)
class Layout:
    """Offsets of the internals: DR0 and the general registers within a saved context,
    emu_counter within the engine."""

    dr0_in_context: int
    counter_in_engine: int
    regs_in_context: int
    cpu_in_engine: int = -1       # the word of uc_struct holding ``uc->cpu``
    env_ptr_in_cpu: int = -1      # the word of CPUState holding ``env_ptr``

    @property
    def env_in_context(self) -> int:
        """Where the copy of the CPU state starts in a saved context (after its header)."""
        return self.regs_in_context    # CPUX86State starts with regs[]


def _context_address(ctx) -> int:
    return ctypes.cast(ctx.context, ctypes.c_void_p).value


def _engine_address(uc: Uc) -> int:
    return ctypes.cast(uc._uch, ctypes.c_void_p).value


def live_env(uc: Uc, layout: Layout) -> int:
    """Address of the engine's live CPU state (``uc->cpu->env_ptr``)."""
    cpu = ctypes.c_void_p.from_address(_engine_address(uc) + layout.cpu_in_engine).value
    return ctypes.c_void_p.from_address(cpu + layout.env_ptr_in_cpu).value


class ExceptionLatch:
    """Reads the pending exception's details and re-arms Unicorn after a hook handled it,
    directly in the live CPU state (module doc)."""

    def __init__(self, uc: Uc, layout: Layout) -> None:
        self._handle = uc._uch
        self._ctx = uc.context_save()     # also makes sure the engine (and its CPU) exists
        if layout.cpu_in_engine >= 0:
            env = live_env(uc, layout)
            dr0 = env + layout.dr0_in_context - layout.env_in_context
            regs = env + layout.regs_in_context - layout.env_in_context
            self._through_context = False
        else:   # the live state was not found: the same fields in a context saved per trap
            dr0 = _context_address(self._ctx) + layout.dr0_in_context
            regs = _context_address(self._ctx) + layout.regs_in_context
            self._through_context = True
        self._error_code = ctypes.c_int32.from_address(dr0 + _ERROR_CODE_FROM_DR0)
        self._is_int = ctypes.c_int32.from_address(dr0 + _IS_INT_FROM_DR0)
        self._old_exception = ctypes.c_int32.from_address(dr0 + _OLD_EXCEPTION_FROM_DR0)
        self._cc_op = ctypes.c_uint32.from_address(regs + _CC_OP_FROM_REGS)
        self._cc_src = ctypes.c_uint64.from_address(regs + _CC_SRC_FROM_REGS)

    def _save(self) -> None:
        _check(uclib.uc_context_save(self._handle, self._ctx.context), "uc_context_save")

    def _restore(self) -> None:
        _check(uclib.uc_context_restore(self._handle, self._ctx.context), "uc_context_restore")

    def begin(self) -> None:
        """Call first in an exception hook (then error_code(), is_software_int())."""
        if self._through_context:
            self._save()

    def pending(self) -> ExceptionInfo:
        """begin(), and the details of the exception the hook is handling."""
        self.begin()
        return ExceptionInfo(self._error_code.value & 0xFFFFFFFF, bool(self._is_int.value))

    def error_code(self) -> int:
        """The pending exception's error code (what :meth:`pending` reports, cheaper)."""
        return self._error_code.value & 0xFFFFFFFF

    def is_software_int(self) -> bool:
        return bool(self._is_int.value)

    def settle_flags(self) -> None:
        """Repair the arithmetic flags of a faulting instruction that had started (module doc,
        item 3): its flags are materialised in ``cc_src``, so ``cc_op`` must say CC_OP_EFLAGS.

        Call it in the exception hook before anything reads the flags, and never for a #PF
        on fetching the instruction. Through a context: right after :meth:`pending`, before
        anything changes the CPU state."""
        if self._cc_op.value != CC_OP_EFLAGS:
            self._cc_op.value = CC_OP_EFLAGS
            if self._through_context:
                self._restore()

    def raw_cc(self) -> tuple[int, int]:
        """``(env->cc_op, env->cc_src)`` now (for the self-test)."""
        return self._cc_op.value, self._cc_src.value

    def rearm(self) -> None:
        """Reset ``old_exception`` to -1. Call it last in the hook: some Unicorn calls made while
        handling (a CR3 write, a translation-cache flush) can store the exception again."""
        if self._through_context:
            self._save()
            self._old_exception.value = -1
            self._restore()
        else:
            self._old_exception.value = -1

    def old_exception(self) -> int:
        if self._through_context:
            self._save()
        return self._old_exception.value


class InstructionCounter:
    """``uc->emu_counter``: instructions started in the current ``emu_start``.

    With ``count=N`` Unicorn's counting hook increments it before each instruction and stops
    when it exceeds N, so after a quantum that ran to its end it reads N + 1.
    """

    def __init__(self, uc: Uc, layout: Layout) -> None:
        base = _engine_address(uc) + layout.counter_in_engine
        self._counter = ctypes.c_size_t.from_address(base)
        self._limit = ctypes.c_size_t.from_address(base + _WORD)   # uc->emu_count

    def read(self) -> int:
        return self._counter.value

    def stop_after_current(self) -> None:
        """End emu_start right after the instruction in progress completes.

        Lowering ``uc->emu_count`` makes Unicorn's own counting hook stop before the next
        instruction. Unlike emu_stop, this is safe in memory and port hooks, where emu_stop
        abandons the instruction after its store landed but before EIP moved on."""
        self._limit.value = self._counter.value


def _scratch_engine() -> Uc:
    """A CPL-0 engine with a flat GDT, an IRET trampoline at 0x2000 and ring-3 code at 0x3000."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    gdt = struct.pack("<6Q", 0, 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF,
                      0x00CFFA000000FFFF, 0x00CFF2000000FFFF)
    uc.mem_write(0x1000, gdt)
    uc.reg_write(UC_X86_REG_GDTR, (0, 0x1000, len(gdt) - 1, 0))
    uc.mem_write(0x2000, b"\xcf")
    # mov ax,0x10; mov ds,ax (#GP 0x10); mov ds,ax (#GP 0x10); nop; nop
    uc.mem_write(0x3000, b"\x66\xb8\x10\x00\x8e\xd8\x8e\xd8\x90\x90")
    uc.mem_write(0x8000, struct.pack("<5I", 0x3000, 0x23, 2, 0x7000, 0x2B))
    uc.reg_write(UC_X86_REG_SS, 0x18)
    uc.reg_write(UC_X86_REG_CS, 0x10)
    uc.reg_write(UC_X86_REG_DS, 0x18)
    uc.reg_write(UC_X86_REG_ESP, 0x8000)
    uc.ctl_exits_enabled(True)
    return uc


def _locate_dr0(uc: Uc) -> int:
    for reg, marker in zip(_DR_REGS, _DR_MARKERS):
        uc.reg_write(reg, marker)
    ctx = uc.context_save()
    blob = ctypes.string_at(_context_address(ctx), ctx.size)
    needle = struct.pack("<4Q", *_DR_MARKERS)
    offset = blob.find(needle)
    for reg in _DR_REGS:
        uc.reg_write(reg, 0)
    if offset < 0 or blob.find(needle, offset + 1) >= 0:
        raise UnicornLayoutError("cannot locate the debug registers in Unicorn's CPU context "
                                 "(dbgvm needs unicorn==2.1.4)")
    return offset


def _locate_regs(uc: Uc) -> int:
    for reg, marker in zip(_GPRS, _GPR_MARKERS):
        uc.reg_write(reg, marker)
    uc.reg_write(UC_X86_REG_EIP, _EIP_MARKER)
    ctx = uc.context_save()
    blob = ctypes.string_at(_context_address(ctx), ctx.size)
    offset = blob.find(struct.pack("<4Q", *_GPR_MARKERS))
    for reg in _GPRS:
        uc.reg_write(reg, 0)
    if offset < 0 or blob.find(struct.pack("<4Q", *_GPR_MARKERS), offset + 1) >= 0 or \
            blob[offset + _EIP_FROM_REGS:offset + _EIP_FROM_REGS + 8] != \
            struct.pack("<Q", _EIP_MARKER):
        raise UnicornLayoutError("cannot locate the general registers in Unicorn's CPU context "
                                 "(dbgvm needs unicorn==2.1.4)")
    return offset


# At 0x3100, ring 3: mov ax,0x10; mov ecx,0x2000; mov esi,0x12e000; xor ebx,ebx; cmp ecx,esi
# (CF=1); mov ds,ax (#GP 0x10, skipped by the hook); setc bl
_CC_TEST = 0x3100
_CC_TEST_CODE = bytes.fromhex("66b81000 b900200000 be00e01200 31db 39f1 8ed8 0f92c3")
_CC_TEST_EFLAGS = 0x85   # CF|PF|SF of 0x2000 - 0x12e000, as gen_compute_eflags leaves them


def _check_flags_repair(uc: Uc, latch: ExceptionLatch) -> None:
    """The CMP's CF must be lost across the #GP exactly as module doc item 3 says (cc_op back
    to CC_OP_SUBL, cc_src holding EFLAGS), and settle_flags must bring it back."""
    uc.mem_write(_CC_TEST, _CC_TEST_CODE)
    seen: list[tuple[int, int, int, int, int]] = []

    def on_intr(u: Uc, intno: int, _: object) -> None:
        info = latch.pending()
        cc_op, cc_src = latch.raw_cc()
        latch.settle_flags()
        seen.append((intno, info.error_code, cc_op, cc_src, u.reg_read(UC_X86_REG_EFLAGS) & 1))
        u.reg_write(UC_X86_REG_EIP, u.reg_read(UC_X86_REG_EIP) + 2)
        latch.rearm()

    hook = uc.hook_add(UC_HOOK_INTR, on_intr)
    uc.ctl_set_exits([_CC_TEST + len(_CC_TEST_CODE)])
    uc.ctl_flush_tb()
    uc.emu_start(_CC_TEST, 0, count=100)
    uc.ctl_set_exits([])
    uc.hook_del(hook)
    expected = [(13, 0x10, CC_OP_SUBL, _CC_TEST_EFLAGS, 1)]
    bl = uc.reg_read(UC_X86_REG_EBX) & 0xFF
    if seen != expected or bl != 1:
        raise UnicornLayoutError(
            f"Unicorn flags self-test failed: faults (vector, error, cc_op, cc_src, CF) {seen}, "
            f"setc {bl}; expected {expected} and setc 1 (dbgvm needs unicorn==2.1.4)")


def _locate_counter(uc: Uc) -> int:
    # The IRET lands on an exit, so this runs one instruction and leaves the distinctive count
    # in uc->emu_count, which sits right after uc->emu_counter.
    uc.ctl_set_exits([0x3000])
    uc.emu_start(0x2000, 0, count=_COUNT_MARKER)
    uc.ctl_set_exits([])
    base = _engine_address(uc)
    for off in range(_WORD, _COUNTER_SCAN_LIMIT, _WORD):
        if ctypes.c_size_t.from_address(base + off).value == _COUNT_MARKER:
            return off - _WORD
    raise UnicornLayoutError("cannot locate emu_counter in Unicorn's engine structure "
                             "(dbgvm needs unicorn==2.1.4)")


def _readable_ranges() -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            if perms[0] == "r":
                lo, hi = (int(x, 16) for x in span.split("-"))
                ranges.append((lo, hi))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):      # an object may span adjacent mappings (heap, mmap)
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _locate_env(uc: Uc, counter_in_engine: int, env_in_context: int) -> tuple[int, int]:
    """(offset of ``uc->cpu`` in the engine, offset of ``env_ptr`` in the CPUState): the one
    chain of two pointers (the CPU state lies within 1 MiB after its CPUState, in the same
    X86CPU) ending at memory equal to a context just saved that follows a register write."""
    ranges = _readable_ranges()
    starts = [lo for lo, _ in ranges]

    def readable(addr: int, size: int) -> bool:
        i = bisect.bisect_right(starts, addr) - 1
        return i >= 0 and addr + size <= ranges[i][1]

    ctx = uc.context_save()
    blob = ctypes.string_at(_context_address(ctx), ctx.size)[env_in_context:]
    engine = _engine_address(uc)
    found = []
    words = struct.unpack(f"<{counter_in_engine // 8}Q",
                          ctypes.string_at(engine, counter_in_engine // 8 * 8))
    for i, cpu in enumerate(words):
        if cpu % 8 or not readable(cpu, 4096):
            continue
        for k, env in enumerate(struct.unpack("<512Q", ctypes.string_at(cpu, 4096))):
            if cpu < env < cpu + (1 << 20) and readable(env, len(blob)) and \
                    ctypes.string_at(env, len(blob)) == blob:
                found.append((8 * i, 8 * k, env))
    # Copies of the state (the context just saved, ``blob`` itself) match too: the live
    # state is the one that follows a register write (regs[R_EAX] comes first in it), and
    # the chain must still lead there when read again (a candidate whose pointers moved or
    # read as NULL is not it).
    saved = uc.reg_read(UC_X86_REG_EAX)
    uc.reg_write(UC_X86_REG_EAX, _EIP_MARKER)
    live = []
    for cpu_in_engine, env_ptr_in_cpu, env in found:
        if ctypes.c_uint32.from_address(env).value != _EIP_MARKER:
            continue
        try:
            again = live_env(uc, Layout(0, counter_in_engine, env_in_context, cpu_in_engine,
                                        env_ptr_in_cpu))
        except (TypeError, ValueError):
            continue
        if again == env:
            live.append((cpu_in_engine, env_ptr_in_cpu))
    uc.reg_write(UC_X86_REG_EAX, saved)
    del ctx
    if len(live) != 1:
        raise UnicornLayoutError("cannot locate Unicorn's live CPU state "
                                 "(dbgvm needs unicorn==2.1.4)")
    cpu_in_engine, env_ptr_in_cpu = live[0]
    return cpu_in_engine, env_ptr_in_cpu


@functools.cache
def calibrated_layout() -> Layout:
    """Locate the internals and verify them; raises UnicornLayoutError on any mismatch.

    Loading selector 0x10 (DPL 0) into DS at CPL 3 must give #GP with error code 0x10 at the
    second instruction; after rearm() the next one must again be #GP(0x10), not #DF. Then a
    CMP's CF must be lost across such a #GP as expected, and repaired by settle_flags().
    """
    uc = _scratch_engine()
    dr0, counter, regs = _locate_dr0(uc), _locate_counter(uc), _locate_regs(uc)
    try:
        env_chain = _locate_env(uc, counter, regs)
    except UnicornLayoutError:
        env_chain = (-1, -1)     # slower but equivalent: the latch goes through contexts
    layout = Layout(dr0, counter, regs, *env_chain)
    latch = ExceptionLatch(uc, layout)
    counter = InstructionCounter(uc, layout)
    seen: list[tuple[int, int, bool, int]] = []

    def on_intr(u: Uc, intno: int, _: object) -> None:
        info = latch.pending()
        seen.append((intno, info.error_code, info.is_software_int, counter.read()))
        u.reg_write(UC_X86_REG_EIP, u.reg_read(UC_X86_REG_EIP) + 2)
        latch.rearm()

    hook = uc.hook_add(UC_HOOK_INTR, on_intr)
    uc.ctl_flush_tb()
    uc.emu_start(0x3000, 0, count=5)
    uc.hook_del(hook)
    expected = [(13, 0x10, False, 2), (13, 0x10, False, 3)]
    if seen != expected or counter.read() != 6 or latch.old_exception() != -1:
        raise UnicornLayoutError(
            f"Unicorn self-test failed: faults {seen}, counter {counter.read()}; expected "
            f"{expected} and counter 6 (dbgvm needs unicorn==2.1.4)")
    _check_flags_repair(uc, latch)
    return layout
