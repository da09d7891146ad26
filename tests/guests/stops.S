# Ways a run ends other than the debug-exit port. The last character of the command line picks
# one: h = HLT with the virtual IF clear; t = triple fault (empty IDT, then #UD);
# u = 16-bit IRET (unsupported); m = store beyond guest RAM; g = task gate in the IDT;
# p = with paging on, a store to a page mapped beyond guest RAM.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mode_char
        cmp $'h', %al
        je halt_forever
        cmp $'t', %al
        je triple
        cmp $'u', %al
        je iret16
        cmp $'m', %al
        je beyond_ram
        cmp $'g', %al
        je task_gate
        cmp $'p', %al
        je paged_beyond_ram
        exit_with 0x40

halt_forever:
        cli
halt_insn:
        hlt
        exit_with 0x41

triple:
        lidt empty_idt
triple_insn:
        ud2

iret16:
        pushw $0
        pushw $0x10
        pushw $0
iret16_insn:
        iretw

beyond_ram:
        movl $1, 0x7f000000
        exit_with 0x42

task_gate:
        call setup_tables
        movl $0x00280000, idt + 0x50 * 8       # selector 0x28 in bits 16..31
        movl $0x00008500, idt + 0x50 * 8 + 4   # present task gate
gate_insn:
        int $0x50
        exit_with 0x43

paged_beyond_ram:                       # a page table entry pointing past the end of RAM
        mov $0x7f000003, %eax
        mov %eax, pt0 + 4 * 0x300       # 0x300000 -> physical 0x7f000000
        identity_map pt0, 0x300
        mov $pt0, %eax
        or $3, %eax
        mov %eax, pd
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80000000, %eax
        mov %eax, %cr0
paged_insn:
        movl $1, 0x300000
        exit_with 0x44

        .data
empty_idt: .word 0
        .long 0
        .bss
        .p2align 12
pd:     .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
