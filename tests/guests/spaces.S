# Two address spaces (page directories A and B) that map 0x400000 to different pages. The guest
# switches between them, rewrites A's page table while B is current (no INVLPG: the CR3 write
# back to A is what makes the change visible, architecturally), then rewrites A's directory
# entry to point at another page table, and reads through A after each change.
        .include "common.inc"
        .set V, 0x400000
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        movl $0x11111111, 0x200000
        movl $0x22222222, 0x201000
        movl $0x33333333, 0x202000
        movl $0x44444444, 0x203000
        identity_map pt0  # identity 0..4 MiB for the kernel, shared
        movl $0x200003, pt_a
        movl $0x201003, pt_b
        movl $0x203003, pt_c
        mov $pt0, %eax
        or $3, %eax
        mov %eax, pd_a
        mov %eax, pd_b
        mov $pt_a, %eax
        or $3, %eax
        mov %eax, pd_a + 4
        mov $pt_b, %eax
        or $3, %eax
        mov %eax, pd_b + 4
        mov $pd_a, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80000000, %eax
        mov %eax, %cr0

        call show                       # A: 11111111
        mov $pd_b, %eax
        mov %eax, %cr3
        call show                       # B: 22222222
        mov $pd_a, %eax
        mov %eax, %cr3
        call show                       # A again: 11111111
        mov $pd_b, %eax
        mov %eax, %cr3
        movl $0x202003, pt_a            # rewrite A's PTE while B is current
        call show                       # B: 22222222
        mov $pd_a, %eax
        mov %eax, %cr3
        call show                       # A: 33333333
        mov $pt_c, %eax                 # rewrite A's PDE while A is current...
        or $3, %eax
        mov %eax, pd_a + 4
        mov $pd_a, %eax                 # ...and reload CR3
        mov %eax, %cr3
        call show                       # A: 44444444
        exit_with 0x0e

show:
        puts m_value
        mov V, %eax
        call print_hex
        call newline
        ret

        .data
m_value: .asciz "0x400000 reads "
        .bss
        .p2align 12
pd_a:   .fill 1024, 4, 0
pd_b:   .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
pt_a:   .fill 1024, 4, 0
pt_b:   .fill 1024, 4, 0
pt_c:   .fill 1024, 4, 0
