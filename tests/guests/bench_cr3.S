# Benchmark: switch CR3 between two address spaces (two page directories sharing one page
# table) and touch one data page after each switch.
        .include "common.inc"
        .set SWITCHES, 20000
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        identity_map pt0
        mov $pt0, %eax
        or $3, %eax
        mov %eax, pd_a
        mov %eax, pd_b
        mov $pd_a, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80000000, %eax
        mov %eax, %cr0
        mov $SWITCHES / 2, %ecx
        mov $pd_a, %ebx
        mov $pd_b, %edx
2:      mov %ebx, %cr3
        mov 0x300000, %eax
        mov %edx, %cr3
        mov 0x300000, %eax
        loop 2b
        exit_with 0

        .bss
        .p2align 12
pd_a:   .fill 1024, 4, 0
pd_b:   .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
