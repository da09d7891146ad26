# Benchmark: with paging on (4 KiB pages, identity-mapped 16 MiB), touch every page of
# 12 MiB once per round, turning paging off and on between rounds so that the shadow is
# dropped and every touch is a shadow fill.
        .include "common.inc"
        .set ROUNDS, 20
        .set FIRST, 0x400000
        .set PAGES, 3072
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        identity_map pts, 4096  # 4 page tables: 0..16 MiB
        xor %ebx, %ebx
2:      mov %ebx, %eax                  # PDE i -> pts + i*4096
        shl $12, %eax
        add $pts, %eax
        or $3, %eax
        mov %eax, pd(,%ebx,4)
        inc %ebx
        cmp $4, %ebx
        jb 2b
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80000000, %eax
        mov %eax, %cr0
        mov $ROUNDS, %edx
round:  mov %cr0, %eax                  # paging off and on: every page faults again
        and $0x7fffffff, %eax
        mov %eax, %cr0
        or $0x80000000, %eax
        mov %eax, %cr0
        mov $FIRST, %esi
        mov $PAGES, %ecx
3:      mov (%esi), %eax
        add $0x1000, %esi
        loop 3b
        dec %edx
        jnz round
        exit_with 0

        .bss
        .p2align 12
pd:     .fill 1024, 4, 0
pts:    .fill 4096, 4, 0
