# Entry, interrupt stubs and ring switches of the dbgvm bundled guest.
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x3                      # page-aligned modules, memory info
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .set KDATA, 0x10
        .set UCODE, 0x1B
        .set UDATA, 0x23

        .text
        .globl _start
_start:                                         # Multiboot: EAX magic, EBX info, IF clear
        cli
        mov $kstack_top, %esp
        xor %ebp, %ebp
        push %ebx
        push %eax
        call kmain
1:      cli
        hlt
        jmp 1b

# load_gdt(gdtr): load the GDT, reload every segment register, load TR
        .globl load_gdt
load_gdt:
        mov 4(%esp), %eax
        lgdt (%eax)
        ljmp $0x08, $1f
1:      mov $KDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        mov $0x28, %ax
        ltr %ax
        ret

        .globl load_idt
load_idt:
        mov 4(%esp), %eax
        lidt (%eax)
        ret

# enter_user(entry, stack): drop to ring 3 through IRET on a fresh kernel stack
        .globl enter_user
enter_user:
        mov 4(%esp), %ecx
        mov 8(%esp), %edx
        mov $kstack_top, %esp
        mov $UDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        push $UDATA                             # ss
        push %edx                               # esp
        push $0x202                             # eflags: IF
        push $UCODE                             # cs
        push %ecx                               # eip
        iret

# Interrupt stubs: every vector pushes (error code or 0, vector) and joins isr_common.
        .macro stub vec, has_error=0
isr\vec:
        .if \has_error == 0
        push $0
        .endif
        push $\vec
        jmp isr_common
        .endm

        .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        stub \v
        .endr
        .irp v, 8,10,11,12,13,14,17
        stub \v, 1
        .endr
        .irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,128
        stub \v
        .endr

isr_common:
        pusha
        push %ds
        push %es
        mov $KDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        push %esp                               # struct frame *
        call isr_dispatch
        add $4, %esp
        pop %es
        pop %ds
        popa
        add $8, %esp
        iret

        .section .rodata
        .align 4
        .globl isr_table                        # vectors 0..47, then 0x80
isr_table:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .long isr\v
        .endr
        .irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,128
        .long isr\v
        .endr

        .bss
        .align 16
        .globl kstack_top
kstack: .fill 16384, 1, 0
kstack_top:

        .section .note.GNU-stack, "", @progbits
