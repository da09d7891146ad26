# The virtual interrupt flag as the guest sees it in interrupt frames: INT 0x80 through a trap
# gate with IF clear and set, INT 0x81 through an interrupt gate (the handler's own frame
# shows the IF of the interrupted code), IRET restoring IF=1 from a frame, LMSW, and CPUID's
# presence.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        set_gate 0x80, trap_handler, 0x8F
        set_gate 0x81, intr_handler, 0x8E
        cli
        int $0x80                       # frame IF = 0
        sti
        int $0x80                       # frame IF = 1
        int $0x81                       # frame IF = 1; the handler then runs with IF = 0
        cli
        pushl $0x202                    # IRET with IF = 1 in the frame
        pushl $KCODE
        pushl $after_iret
        iret
after_iret:
        int $0x80                       # frame IF = 1 again
        cli
        smsw %ax
        or $8, %ax                      # LMSW sets TS
        lmsw %ax
        mov %cr0, %eax
        and $0xf, %eax
        puts m_lmsw
        call print_hex
        call newline
        exit_with 0x0a

trap_handler:
        puts m_trap
        mov 8(%esp), %eax               # EFLAGS in the frame
        and $0x200, %eax
        call print_hex
        call newline
        iret

intr_handler:
        puts m_intr
        mov 8(%esp), %eax
        and $0x200, %eax
        call print_hex
        call newline
        int $0x80                       # nested: frame shows IF = 0 (the interrupt gate cleared it)
        iret

        .data
m_trap: .asciz "trap gate frame IF="
m_intr: .asciz "interrupt gate frame IF="
m_lmsw: .asciz "cr0 low bits after lmsw="
