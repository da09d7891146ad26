# The guest rewrites a GDT descriptor after LGDT, without reloading GDTR: a new base must take
# effect at the next segment load, and a descriptor made invalid (an interrupt gate in the GDT)
# must fault with #GP(selector) when loaded. With "paging" as the last word of the command
# line the same happens with paging on (the GDT page is then write-protected in the shadow).
        .include "common.inc"
        .set SPARE, 0x38
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mov 16(%ebx), %esi
1:      lodsb
        test %al, %al
        jnz 1b
        movb -2(%esi), %al
        mov %al, mode
        call setup_tables
        set_gate 13, gp_handler, 0x8E
        movl $0x5eed1000, 0x1000
        movl $0x5eed2000, 0x2000
        cmpb $'g', mode                 # "...paging"
        jne 2f
        call enable_paging
        puts m_paging

2:      mov $SPARE, %ax
        mov %ax, %fs
        mov %fs:0x1000, %eax            # base 0: physical 0x1000
        puts m_before
        call print_hex
        call newline

        movw $0x1000, gdt + SPARE + 2   # base bits 0..15 = 0x1000
        mov $SPARE, %ax
        mov %ax, %fs
        mov %fs:0x1000, %eax            # base 0x1000: physical 0x2000
        puts m_after
        call print_hex
        call newline

        movl $0x00008e00, gdt + SPARE + 4   # now a present 32-bit interrupt gate
        mov $SPARE, %ax
load_gate:
        mov %ax, %fs                    # #GP(0x38)
        puts m_done
        exit_with 0x0d

enable_paging:
        identity_map pt0
        mov $pt0, %eax
        or $3, %eax
        mov %eax, pd
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80010000, %eax
        mov %eax, %cr0
        ret

gp_handler:
        push %eax
        puts m_gp
        mov 4(%esp), %eax
        call print_hex
        call newline
        pop %eax
        add $4, %esp
        addl $2, (%esp)                 # skip "mov %ax, %fs" (8e e0)
        iret

        .data
mode:   .byte 0
m_paging: .asciz "paging on\n"
m_before: .asciz "fs:0x1000 with base 0: "
m_after: .asciz "fs:0x1000 with base 0x1000: "
m_gp:   .asciz "#GP err="
m_done: .asciz "done\n"
        .bss
        .p2align 12
pd:     .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
