"""Descriptor decoding, validation (docs/design.md, section 6) and the installed copies."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dbgvm.core.descriptors import (HOLE_LAST_BYTE, Descriptor, Table, check, installed_copy)

FLAT_CODE0 = Descriptor(0x00CF9A000000FFFF)
FLAT_DATA0 = Descriptor(0x00CF92000000FFFF)
FLAT_CODE3 = Descriptor(0x00CFFA000000FFFF)


def make(base: int, limit: int, access: int, flags: int = 0xC) -> Descriptor:
    raw = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40 | ((limit >> 16) & 0xF) << 48
    raw |= flags << 52 | (base >> 24) << 56
    return Descriptor(raw)


def test_decode_flat_segments():
    assert (FLAT_CODE0.base, FLAT_CODE0.limit, FLAT_CODE0.dpl) == (0, 0xFFFFFFFF, 0)
    assert FLAT_CODE0.is_code and FLAT_CODE0.readable and not FLAT_CODE0.conforming
    assert FLAT_DATA0.is_data and FLAT_DATA0.writable


def test_ring0_view_compresses_dpl_and_truncates():
    copy = installed_copy(FLAT_DATA0, ring0_view=True)
    assert copy.dpl == 3 and copy.present
    assert copy.base + copy.limit == HOLE_LAST_BYTE


def test_ring0_view_hides_user_code_and_ring3_view_keeps_dpl():
    assert not installed_copy(FLAT_CODE3, ring0_view=True).present
    kernel = installed_copy(FLAT_CODE0, ring0_view=False)
    assert kernel.dpl == 0 and kernel.present


def test_system_descriptors_are_never_installed():
    tss = make(0x1000, 0x67, 0x89, 0)
    assert installed_copy(tss, True).raw == 0 and installed_copy(tss, False).raw == 0


def test_refusals_follow_design_rules():
    assert check(make(0, 0, 0x8E, 0), Table.GDT) is not None          # interrupt gate in GDT
    assert check(make(0, 0, 0x85, 0), Table.GDT) is not None          # task gate in GDT
    assert check(make(0x1000, 0x67, 0x89, 0), Table.LDT) is not None  # TSS in an LDT
    assert check(make(0x1000, 0x67, 0x89, 0), Table.GDT) is None
    assert check(make(0xFFFFF000, 0x67, 0x89, 0), Table.GDT) is not None  # TSS in the hole
    # the base is linear: anywhere below the hole (Linux's TSS is near 0xFF000000)
    assert check(make(0xFF000000, 0x67, 0x89, 0), Table.GDT) is None
    assert check(make(0xFFBFFF98, 0x67, 0x89, 0), Table.GDT) is None   # last byte 0xFFBFFFFF
    assert check(make(0xFFBFFF99, 0x67, 0x89, 0), Table.GDT) is not None  # reaches the hole
    assert check(make(0xFFB00000, 0xFFFF, 0x82, 0), Table.GDT) is None     # an LDT likewise
    assert check(make(0xFFC00000, 0xFFF, 0x92, 0), Table.GDT) is not None  # base in the hole
    assert check(make(0, 0, 0x0E, 0), Table.GDT) is None              # not present: accepted
    assert check(make(0, 0, 0x80, 0), Table.GDT) is not None          # reserved type 0


@given(base=st.integers(0, HOLE_LAST_BYTE), limit=st.integers(0, 0xFFFFF),
       granular=st.booleans(), dpl=st.integers(0, 3), code=st.booleans())
def test_no_installed_segment_reaches_the_hole(base, limit, granular, dpl, code):
    access = 0x80 | dpl << 5 | 0x10 | (0xA if code else 0x2)
    desc = make(base, limit, access, 0xC if granular else 0x4)
    assert check(desc, Table.GDT) is None
    for ring0 in (True, False):
        copy = installed_copy(desc, ring0)
        assert copy.base == desc.base
        assert copy.base + copy.limit <= HOLE_LAST_BYTE
        # truncation never widens a segment
        assert copy.limit <= desc.limit


def test_call_gates_are_refused_with_a_reason():
    """docs/design.md, section 6: far transfers through call gates are not emulated, so every
    call gate is refused when the table is loaded, with a desc event saying so (using one
    would otherwise fault without a reason)."""
    from dbgvm.core.segments import SegmentTables, TableLayout

    events = []
    gdt = [Descriptor(0), FLAT_CODE0, FLAT_DATA0,
           # call gates (selector in the base's low 16 bits, offset in the limit's)
           make(0x08, 0x1000, 0x8C, 0),            # -> 0x08 (code)
           make(0x10, 0x1000, 0x8C, 0),            # -> 0x10 (data)
           make(0x50, 0x1000, 0x8C, 0)]            # -> beyond the GDT
    image = b"".join(d.pack() for d in gdt)

    class FakeUc:
        def mem_write(self, addr, data):
            pass

        def reg_write(self, reg, value):
            pass

    tables = SegmentTables(FakeUc(), TableLayout(0, 0, 0, 0),
                           lambda addr, size: image[addr:addr + size],
                           lambda kind, eip, **f: events.append(f), lambda: 0)
    tables.load_gdt(0, len(image) - 1, 0)
    for selector in (0x18, 0x20, 0x28):
        assert "call gates are not emulated" in tables.refusal(selector)
    assert [(e["op"], e["index"]) for e in events] == [("refuse", 3), ("refuse", 4),
                                                       ("refuse", 5)]
