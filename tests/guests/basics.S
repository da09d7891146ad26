# Own GDT/IDT, INT n through a trap gate, reflected #DE and #GP (selector as error code),
# CLI/STI, and PIC+PIT timer interrupts that wake the CPU from HLT.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        set_gate 0, de_handler, 0x8E
        set_gate 13, gp_handler, 0x8E
        set_gate 0x20, timer_handler, 0x8E
        set_gate 0x80, syscall_handler, 0x8F
        puts hello

        mov $0x1234, %eax
        int $0x80                       # trap gate: IF unchanged, returns eax+1
        call print_hex
        call newline

        xor %edx, %edx
        mov $7, %eax
        xor %ecx, %ecx
de_insn:
        div %ecx                        # #DE
        puts after_de

        mov $0x33, %ax
gp_insn:
        mov %ax, %ds                    # beyond the GDT limit: #GP(0x30)
        puts after_gp

        mov $11932, %ax                 # 100 Hz
        call setup_timer
        sti
wait:   hlt
        cmpl $3, ticks
        jb wait
        cli
        puts got_ticks
        exit_with 0x10

de_handler:
        puts de_msg
        mov (%esp), %eax                # saved EIP: the faulting div
        call print_hex
        call newline
        addl $2, (%esp)
        iret

gp_handler:
        puts gp_msg
        mov (%esp), %eax                # error code
        call print_hex
        mov $' ', %al
        outb %al, $0xe9
        mov 4(%esp), %eax               # saved EIP
        call print_hex
        call newline
        add $4, %esp
        addl $2, (%esp)
        iret

syscall_handler:
        inc %eax
        iret

timer_handler:
        push %eax
        incl ticks
        mov $0x20, %al
        outb %al, $0x20
        pop %eax
        iret

        .data
ticks:  .long 0
hello:  .asciz "hello from basics\n"
de_msg: .asciz "#DE at "
after_de: .asciz "after #DE\n"
gp_msg: .asciz "#GP err "
after_gp: .asciz "after #GP\n"
got_ticks: .asciz "three timer ticks\n"
