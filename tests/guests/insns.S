# The sensitive instructions a kernel uses, each followed by what it left behind:
# MOV to/from CR0/CR2/CR3/CR4, CLTS, LTR (busy bit), LLDT and an LDT segment, RDMSR/WRMSR
# (SYSENTER_CS), RDTSC, MOV/POP/LSS to SS, far RET to the same ring, INVLPG, WBINVD.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        set_gate 13, gp_handler, 0x8E

        mov %cr0, %eax
        puts m_cr0
        call print_hex
        call newline

        mov $0x5000, %eax
        mov %eax, %cr3
        mov $0x12345678, %eax
        mov %eax, %cr2
        mov $0x10, %eax
        mov %eax, %cr4
        xor %eax, %eax
        mov %cr3, %eax
        puts m_cr3
        call print_hex
        mov %cr2, %eax
        puts m_cr2
        call print_hex
        mov %cr4, %eax
        puts m_cr4
        call print_hex
        call newline

        mov %cr0, %eax
        or $8, %eax                     # CR0.TS
        mov %eax, %cr0
        clts
        mov %cr0, %eax
        puts m_clts
        call print_hex
        call newline

        movzbl gdt + TSSSEL + 5, %eax   # access byte: 0x8b once LTR marked it busy
        puts m_tss
        call print_hex
        call newline

        movl $0xcafef00d, 0x1000        # LDT data segment 1 has base 0x1000
        mov $ldt, %eax
        mov %ax, gdt + 0x30 + 2
        shr $16, %eax
        mov %al, gdt + 0x30 + 4
        mov %ah, gdt + 0x30 + 7
        mov $0x30, %ax
        lldt %ax
        mov $0x0c, %ax                  # LDT index 1, RPL 0
        mov %ax, %fs
        mov %fs:0, %eax
        puts m_ldt
        call print_hex
        call newline
        mov $KDATA, %ax
        mov %ax, %fs

        mov $0x174, %ecx
        mov $0x10, %eax
        xor %edx, %edx
        wrmsr
        xor %eax, %eax
        rdmsr
        puts m_msr
        call print_hex
        call newline

        rdtsc
        mov %eax, %ebx
        rdtsc
        sub %ebx, %eax
        setnz %al
        movzbl %al, %eax
        puts m_tsc
        call print_hex
        call newline

        mov %esp, %ebx
        mov $KDATA, %ax
        mov %ax, %ss                    # MOV SS
        push $KDATA
        pop %ss                         # POP SS
        movl %esp, farptr
        movw $KDATA, farptr + 4
        lss farptr, %esp                # LSS
        cmp %esp, %ebx
        sete %al
        movzbl %al, %eax
        puts m_ss
        call print_hex
        call newline

        push $KCODE
        push $after_lret
        lret                            # far RET to the same ring
after_lret:
        puts m_lret

        invlpg 0x1000
        wbinvd
        puts m_inv
        puts m_done
        exit_with 0x05

gp_handler:
        push %eax
        puts m_gp
        mov 4(%esp), %eax
        call print_hex
        call newline
        mov gp_skip, %eax
        add %eax, 8(%esp)
        pop %eax
        add $4, %esp
        iret

        .data
gp_skip: .long 0
farptr: .long 0
        .word 0
        .align 8
ldt:    .quad 0
        .quad 0x00cf92000000ffff | (0x1000 << 16)
m_cr0:  .asciz "cr0="
m_cr3:  .asciz "cr3="
m_cr2:  .asciz " cr2="
m_cr4:  .asciz " cr4="
m_clts: .asciz "cr0 after clts="
m_tss:  .asciz "tss access="
m_ldt:  .asciz "fs:0 via ldt="
m_msr:  .asciz "sysenter_cs="
m_gp:   .asciz "#GP err="
m_tsc:  .asciz "tsc advanced="
m_ss:   .asciz "ss loads ok="
m_lret: .asciz "lret ok\n"
m_inv:  .asciz "invlpg wbinvd ok\n"
m_done: .asciz "done\n"
