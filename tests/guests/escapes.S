# Escape attempts: each case tries to reach the monitor hole (0xFFC00000 and up, which the
# monitor owns: docs/design.md) or the host, and must end in the fault the guest would see on
# hardware under dbgvm's documented model (segments truncated just below the hole, the hole
# never mappable, descriptors checked as in design.md section 6), or in a clean stop. The last
# character of the command line ("mode=X") picks the case; tests/test_escapes.py lists what
# each one must give.
#
# One handler serves vectors 0..19: it prints
#   "fault vec=V err=E cr2=C eip=P cs=S"
# (the saved EIP and CS of the frame, CR2 as the guest reads it) and ends the run with exit code
# 0x30. CR2 is set to the sentinel 0xc2c2c2c2 first, so a #GP must leave it alone. A case whose
# attempt is not refused prints "ESCAPED" and exits with 0x7f.
        .include "common.inc"
        .set SPARE, 0x38
        .set LDTSEL, 0x30
        .set MAGIC, 0xe5ca9e00          # the value every escape attempt tries to store
        .set CR2_SENTINEL, 0xc2c2c2c2
        .set HOLE, 0xffc00000
        .set TRAMPOLINE, 0xffc40000     # the monitor's one-instruction IRET trampoline
        .set HOLE_PT, 0xffc62000        # the monitor's page table of the hole itself
        .set SHADOW_POOL, 0xffd00000    # the monitor's shadow page tables

        # a descriptor's two words from base, limit (20 bits), access byte, flags nibble (G D)
        .macro desc_set sel, base, limit, access, flags
        movl $((\limit & 0xffff) | ((\base & 0xffff) << 16)), gdt + \sel
        movl $(((\base >> 16) & 0xff) | (\access << 8) | (((\limit >> 16) & 0xf) << 16) | (\flags << 20) | (\base & 0xff000000)), gdt + \sel + 4
        .endm

        .macro to_user entry, esp=user_stack_top
        push $UDATA
        push $\esp
        push $0x202
        push $UCODE
        push $\entry
        iret
        .endm

        .macro fault_stub vec, has_error=0
fault_\vec:
        .if \has_error == 0
        push $0
        .endif
        push $\vec
        jmp fault_common
        .endm

        .macro gate vec
        set_gate \vec, fault_\vec, 0x8E
        .endm

        .macro case letter, label
        cmp $\letter, %al
        je \label
        .endm

        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mode_char
        mov %al, mode
        call setup_tables
        gate 0
        gate 1
        gate 2
        gate 3
        gate 4
        gate 5
        gate 6
        gate 7
        gate 8
        gate 9
        gate 10
        gate 11
        gate 12
        gate 13
        gate 14
        gate 15
        gate 16
        gate 17
        gate 18
        gate 19
        set_gate 0x80, escaped, 0xEE    # ring-3 code reports an escape through INT 0x80
        mov $CR2_SENTINEL, %eax
        mov %eax, %cr2
        mov mode, %al
        case 'a', data_segment_into_hole
        case 'b', code_segment_into_hole
        case 'c', base_in_hole
        case 'd', pde_1023
        case 'e', pse_page_over_hole
        case 'f', pte_to_hole_phys_write
        case 'F', pte_to_hole_phys_read
        case 'g', pte_beyond_ram
        case 'P', pse_page_to_hole_phys
        case 't', page_table_in_hole
        case '3', cr3_in_hole
        case 'i', idt_handler_in_hole
        case 'I', idt_handler_in_hole_ring3
        case 'l', ldt_base_in_hole
        case 'L', ldt_reaching_hole
        case 's', tss_reaching_hole
        case 'S', tss_base_in_hole
        case 'r', iret_to_ring0_cs
        case 'R', iret_to_dpl0_cs_rpl3
        case 'v', vmcall_ring3
        case 'w', wrapping_segment
        case 'x', expand_down_segment
        case 'k', stack_across_hole
        case 'K', stack_wraps_into_hole
        case 'h', ring3_reads_hole
        case 'H', ring3_writes_hole
        case 'G', gdt_base_in_hole
        case 'D', idt_base_in_hole
        case 'o', ring3_out_console
        case 'O', ring3_out_exit
        case 'n', ring3_in_pic
        exit_with 0x7e

# Identity-map 0..4 MiB (user accessible, so that ring-3 code runs too); CR0.PG|WP. The caller
# may have added PDEs already.
paging_on:
        mov $pt0, %edi
        mov $7, %eax
        mov $1024, %ecx
1:      stosl
        add $0x1000, %eax
        loop 1b
        mov $pt0, %eax
        or $7, %eax
        mov %eax, pd
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80010000, %eax
        mov %eax, %cr0
        ret

pse_on:
        mov %cr4, %eax
        or $0x10, %eax
        mov %eax, %cr4
        ret

# -- a: a data segment (base 0xFF000000, limit 16 MiB) whose base+limit reaches the hole. Loading
# it is accepted (the installed copy is cut short of the hole); a store at offset 0xC00010
# (linear 0xFFC00010) is beyond the truncated limit: SDM vol. 3 6.15, #GP(0), CR2 untouched.
data_segment_into_hole:
        desc_set SPARE, 0xff000000, 0xfff, 0x92, 0xc
        mov $SPARE, %ax
        mov %ax, %es
        puts m_loaded
a_insn: movl $MAGIC, %es:0xc00010
        jmp escaped

# -- b: a code segment (base 0xFFB00000, limit 2 MiB) reaching the hole; a far JMP to offset
# 0x100010 (linear 0xFFC00010) is beyond the truncated limit 0xFFFFF: SDM vol. 2 JMP,
# "#GP(0) if the EIP is beyond the code segment limit", saved EIP = the JMP.
code_segment_into_hole:
        desc_set SPARE, 0xffb00000, 0x1ff, 0x9a, 0xc
b_insn: ljmp $SPARE, $0x100010
        jmp escaped

# -- c: a data descriptor whose base lies in the hole. design.md 6: refused; the load faults
# with #GP(selector) (as for a descriptor of the wrong type) and a `desc` event says why.
base_in_hole:
        desc_set SPARE, HOLE, 0xfff, 0x92, 0x4
        mov $SPARE, %ax
c_insn: mov %ax, %es
        movl $MAGIC, %es:0x10
        jmp escaped

# -- d: the guest sets page-directory entry 1023 (0xFFC00000..) to its own page table, then
# stores to 0xFFC00010. The flat DS is cut short of the hole: #GP(0), CR2 untouched.
pde_1023:
        mov $pt0, %eax
        or $7, %eax
        mov %eax, pd + 4 * 1023
        call paging_on
d_insn: movl $MAGIC, HOLE + 0x10
        jmp escaped

# -- e: a 4 MiB PSE page at PDE 1023 mapping physical 0..4 MiB over the hole; a store to
# 0xFFC00010: #GP(0) as in d.
pse_page_over_hole:
        call pse_on
        movl $0x00000087, pd + 4 * 1023
        call paging_on
e_insn: movl $MAGIC, HOLE + 0x10
        jmp escaped

# -- f/F: a PTE mapping linear 0x400000 to *physical* 0xFFC00000, where the monitor's memory
# sits in Unicorn's physical space. Not guest RAM: the run ends with a bad-memory stop, for a
# store (f) and for a load (F), before the access happens.
pte_to_hole_phys_write:
        call map_400000_to_hole
f_insn: movl $MAGIC, 0x400010
        jmp escaped

pte_to_hole_phys_read:
        call map_400000_to_hole
F_insn: mov 0x400000, %eax
        jmp escaped

map_400000_to_hole:
        movl $(HOLE | 7), pt1
        movl $(HOLE_PT | 7), pt1 + 4
        mov $pt1, %eax
        or $7, %eax
        mov %eax, pd + 4
        jmp paging_on

# -- g: a PTE mapping linear 0x400000 just past the end of guest RAM (the test gives 16 MiB):
# bad-memory stop.
pte_beyond_ram:
        movl $(0x01000000 | 7), pt1
        mov $pt1, %eax
        or $7, %eax
        mov %eax, pd + 4
        call paging_on
g_insn: movl $MAGIC, 0x400010
        jmp escaped

# -- P: a 4 MiB PSE page at linear 0x800000 with physical base 0xFFC00000 (the whole hole).
pse_page_to_hole_phys:
        call pse_on
        movl $(HOLE | 0x87), pd + 8
        call paging_on
P_insn: movl $MAGIC, 0x800010
        jmp escaped

# -- t: PDE 1 points at a "page table" at physical 0xFFC62000, the monitor's own page table of
# the hole. Not guest RAM: a walk reads open bus (all ones), which maps 0x400000 to physical
# 0xFFFFF000, outside guest RAM: bad-memory stop.
page_table_in_hole:
        movl $(HOLE_PT | 7), pd + 4
        call paging_on
t_insn: movl $MAGIC, 0x400010
        jmp escaped

# -- 3: CR3 = 0xFFD00000, the monitor's shadow page tables, then paging on: every walk reads
# open bus; the run ends with a bad-memory stop at the first fetch.
cr3_in_hole:
        mov $SHADOW_POOL, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80000000, %eax
cr3_insn:
        mov %eax, %cr0
        movl $MAGIC, 0x10
        jmp escaped

# -- i: IDT gate 0x40 with handler offset 0xFFC40000 (the monitor's trampoline) in the flat
# kernel code segment, then INT 0x40. SDM vol. 2 INT n: "#GP(0) if the instruction pointer in
# the IDT is beyond the code segment limits"; the truncated limit is 0xFFBFFFFF; the fault is
# taken at the INT instruction (saved EIP = the INT, CS = the kernel's).
idt_handler_in_hole:
        set_gate 0x40, TRAMPOLINE, 0x8E
i_insn: int $0x40
        jmp escaped

# -- I: the same from virtual ring 3, through a DPL-3 gate.
idt_handler_in_hole_ring3:
        set_gate 0x40, TRAMPOLINE, 0xEE
        to_user I_user
I_user:
I_insn: int $0x40
        int $0x80

# -- l: an LDT descriptor in the GDT with base 0xFFC00000; L: base 0xFFBFFFF8, limit 0xF,
# reaching the hole. design.md 6: refused, LLDT faults with #GP(selector).
ldt_base_in_hole:
        desc_set LDTSEL, HOLE, 0xf, 0x82, 0x0
        mov $LDTSEL, %ax
l_insn: lldt %ax
        jmp escaped

ldt_reaching_hole:
        desc_set LDTSEL, (HOLE-8), 0xf, 0x82, 0x0
        mov $LDTSEL, %ax
L_insn: lldt %ax
        jmp escaped

# -- s: a TSS descriptor (base 0xFFBFFFC0, limit 0x67) reaching the hole; S: base in the hole.
# design.md 6: refused, LTR faults with #GP(selector).
tss_reaching_hole:
        desc_set SPARE, (HOLE-0x40), 0x67, 0x89, 0x0
        mov $SPARE, %ax
s_insn: ltr %ax
        jmp escaped

tss_base_in_hole:
        desc_set SPARE, HOLE, 0x67, 0x89, 0x0
        mov $SPARE, %ax
S_insn: ltr %ax
        jmp escaped

# -- r: from virtual ring 3, IRET with CS = 0x08 (RPL 0) on the stack. SDM vol. 2 IRET: "return
# code segment selector RPL < CPL": #GP(selector) = #GP(0x08).
iret_to_ring0_cs:
        to_user r_user
r_user: push $0x202
        push $KCODE
        push $escaped_ring0
r_insn: iret
        int $0x80

# -- R: the same with CS = 0x0B, the kernel's DPL-0 code segment with RPL 3 (the monitor's real
# copy of it has DPL 3 in the ring-0 view). SDM IRET: non-conforming code segment with
# DPL != RPL: #GP(0x08).
iret_to_dpl0_cs_rpl3:
        to_user R_user
R_user: push $0x202
        push $(KCODE | 3)
        push $escaped_ring0
R_insn: iret
        int $0x80

# -- v: VMCALL from virtual ring 3 (the test registers a hypercall handler): #UD, no error code,
# saved EIP = the VMCALL; the handler is never called.
vmcall_ring3:
        to_user v_user
v_user: mov $0x1234, %eax
v_insn: vmcall
        int $0x80

# -- w: a data segment with base 0x400000 and a 4 GiB limit, so that base+limit wraps past
# 4 GiB to 0x3FFFFF (below the hole if computed modulo 2^32). Offset 0xFF800010 is linear
# 0xFFC00010: beyond the truncated limit, #GP(0).
wrapping_segment:
        desc_set SPARE, 0x400000, 0xfffff, 0x92, 0xc
        mov $SPARE, %ax
        mov %ax, %es
        puts m_loaded
w_insn: movl $MAGIC, %es:0xff800010
        jmp escaped

# -- x: an expand-down data segment, base 0, limit 0xFFFF, B=1: valid offsets 0x10000..
# 0xFFFFFFFF, which cover the hole. A store at offset 0xFFC00010: #GP(0).
expand_down_segment:
        desc_set SPARE, 0, 0xffff, 0x96, 0x4
        mov $SPARE, %ax
        mov %ax, %es
        puts m_loaded
x_insn: movl $MAGIC, %es:HOLE + 0x10
        jmp escaped

# -- k: virtual ring 3 with paging on, a user stack page at 0xFFBFF000 (the last page below
# the hole), ESP = 0xFFC00002; PUSH of 4 bytes spans 0xFFBFFFFE..0xFFC00001. The flat SS is cut
# short of the hole: SDM vol. 3 6.15, a stack access beyond the SS limit is #SS(0), and nothing
# is written (the two bytes below the hole keep their value).
stack_across_hole:
        mov $user_stack_page, %eax
        or $7, %eax
        mov %eax, pt1 + 4 * 1023
        movl $0x5a5a5a5a, user_stack_page + 0xffc
        mov $pt1, %eax
        or $7, %eax
        mov %eax, pd + 4 * 1022
        call paging_on
        to_user k_user, HOLE + 2
k_user:
k_insn: push $MAGIC
        int $0x80

# -- K: virtual ring 3, ESP = 0 in the flat stack segment: PUSH wraps ESP to 0xFFFFFFFC, the
# hole's last page (the page the monitor borrows for its alias mapping). #SS(0) as in k.
stack_wraps_into_hole:
        call paging_on
        to_user K_user, 0
K_user:
K_insn: push $MAGIC
        int $0x80

# -- h/H: virtual ring 3, paging on: a load from the trampoline page (h) and a store to the
# hole's first page (H): beyond the truncated DS limit, #GP(0).
ring3_reads_hole:
        call paging_on
        to_user h_user
h_user:
h_insn: mov TRAMPOLINE, %eax
        int $0x80

ring3_writes_hole:
        call paging_on
        to_user H_user
H_user:
H_insn: movl $MAGIC, HOLE + 0x10
        int $0x80

# -- G: LGDT with base 0xFFC00000 (the monitor's own real GDT). The monitor reads and checks
# a new GDT at LGDT (design.md 6), and the table lies beyond the kernel's truncated segments:
# #GP(0) at the LGDT, and nothing of the monitor's table becomes a guest descriptor.
gdt_base_in_hole:
G_insn: lgdt hole_gdt_desc
        mov $KDATA, %ax
        mov %ax, %es
        jmp escaped

# -- D: LIDT with base 0xFFC00000, then INT 0x40: no gate can be read, nor for #GP, nor for #DF:
# the run ends with a triple fault (a reset), as on a PC.
idt_base_in_hole:
        lidt hole_gdt_desc
D_insn: int $0x40
        jmp escaped

# -- o/O/n: port I/O from virtual ring 3 with IOPL 0 (EFLAGS 0x202) and a TSS without an I/O
# permission bitmap: its I/O map base (offset 0x66) is 0x68, past the limit 0x67, as Linux sets
# it. SDM vol. 1 19.5.2: IN/OUT at CPL > IOPL consult the bitmap, and one beyond the TSS limit
# means #GP(0). (A base of 0 would put the bitmap over the TSS itself, granting the ports whose
# bits are clear there.) o: OUT to the debug console (0xE9); O: OUT to the debug-exit port
# (0xF4), which would end the run with the user's status; n: IN from the PIC.
ring3_out_console:
        movw $0x68, tss + 0x66
        to_user o_user
o_user: mov $'!', %al
o_insn: outb %al, $0xe9
        int $0x80

ring3_out_exit:
        movw $0x68, tss + 0x66
        to_user O_user
O_user: mov $0x55, %al
O_insn: outb %al, $0xf4
        int $0x80

ring3_in_pic:
        movw $0x68, tss + 0x66
        to_user n_user
n_user:
n_insn: inb $0x21, %al
        int $0x80

# frame: vector, error, eip, cs, eflags [, esp, ss]
fault_common:
        mov $KDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        puts m_vec
        mov 0(%esp), %eax
        call print_hex
        puts m_err
        mov 4(%esp), %eax
        call print_hex
        puts m_cr2
        mov %cr2, %eax
        call print_hex
        puts m_eip
        mov 8(%esp), %eax
        call print_hex
        puts m_cs
        mov 12(%esp), %eax
        call print_hex
        call newline
        exit_with 0x30

escaped_ring0:                          # where an IRET to ring 0 would land
        int $0x80
escaped:
        mov $KDATA, %ax
        mov %ax, %ds
        puts m_escaped
        exit_with 0x7f

        fault_stub 0
        fault_stub 1
        fault_stub 2
        fault_stub 3
        fault_stub 4
        fault_stub 5
        fault_stub 6
        fault_stub 7
        fault_stub 8, 1
        fault_stub 9
        fault_stub 10, 1
        fault_stub 11, 1
        fault_stub 12, 1
        fault_stub 13, 1
        fault_stub 14, 1
        fault_stub 15
        fault_stub 16
        fault_stub 17, 1
        fault_stub 18
        fault_stub 19

        .data
mode:   .byte 0
        .align 4
hole_gdt_desc: .word 0xff
        .long HOLE
m_loaded: .asciz "segment loaded\n"
m_vec:  .asciz "fault vec="
m_err:  .asciz " err="
m_cr2:  .asciz " cr2="
m_eip:  .asciz " eip="
m_cs:   .asciz " cs="
m_escaped: .asciz "ESCAPED\n"
        .bss
        .p2align 12
pd:     .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
pt1:    .fill 1024, 4, 0
user_stack_page: .fill 4096, 1, 0
user_stack: .fill 4096, 1, 0
user_stack_top:
