# A ring-3 task: IRET to user mode with a stack switch, INT 0x80 through a DPL-3 interrupt gate
# (stack from the TSS), and faults a user program causes: CLI (#GP 0), INT through a DPL-0 gate
# (#GP vector*8+2), loading a kernel data selector (#GP 0x10). The kernel prints each frame.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        set_gate 13, gp_handler, 0x8E
        set_gate 0x80, syscall_handler, 0xEE
        set_gate 0x81, never_handler, 0x8E
        puts hello
        push $UDATA
        push $user_stack_top
        push $0x202
        push $UCODE
        push $user_entry
        iret

user_entry:
        mov $UDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov $0x11, %eax
        int $0x80                       # syscall 0x11: print frame
        movl $1, gp_skip
user_cli:
        cli                             # #GP(0)
        movl $2, gp_skip
user_int:
        int $0x81                       # #GP(0x40a)
        movl $2, gp_skip
        mov $KDATA, %ax
user_lds:
        mov %ax, %ds                    # #GP(0x10)
        mov $0x22, %eax
        int $0x80                       # syscall 0x22: exit
1:      jmp 1b

# frame: eip cs eflags esp ss  (interrupt gate from ring 3)
syscall_handler:
        push %eax
        mov $KDATA, %ax
        mov %ax, %ds
        pop %eax
        cmp $0x22, %eax
        je do_exit
        puts sys_msg
        call print_hex
        puts cs_msg
        mov 4(%esp), %eax
        call print_hex
        puts fl_msg
        mov 8(%esp), %eax
        call print_hex
        puts ss_msg
        mov 16(%esp), %eax
        call print_hex
        puts esp_msg
        mov 12(%esp), %eax
        call print_hex
        call newline
        mov $UDATA, %ax
        mov %ax, %ds
        iret
do_exit:
        puts bye
        exit_with 0x21

# frame: err eip cs eflags esp ss
gp_handler:
        push %eax
        mov $KDATA, %ax
        mov %ax, %ds
        puts gp_msg
        mov 4(%esp), %eax
        call print_hex
        puts at_msg
        mov 8(%esp), %eax
        call print_hex
        puts cs_msg
        mov 12(%esp), %eax
        call print_hex
        puts ss_msg
        mov 24(%esp), %eax
        call print_hex
        call newline
        mov gp_skip, %eax
        add %eax, 8(%esp)
        mov $UDATA, %ax
        mov %ax, %ds
        pop %eax
        add $4, %esp
        iret

never_handler:
        puts never
        exit_with 0x7f

        .data
gp_skip: .long 0
hello:  .asciz "ring3 test\n"
sys_msg: .asciz "syscall eax="
cs_msg: .asciz " cs="
fl_msg: .asciz " eflags="
ss_msg: .asciz " ss="
esp_msg: .asciz " esp="
gp_msg: .asciz "#GP err="
at_msg: .asciz " eip="
bye:    .asciz "bye from ring 3\n"
never:  .asciz "DPL-0 gate entered from ring 3!\n"
        .bss
        .align 16
user_stack: .fill 4096, 1, 0
user_stack_top:
