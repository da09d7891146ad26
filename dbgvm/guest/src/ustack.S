# The user stack, in the user pages (see link.ld).
        .bss
        .align 16
        .globl ustack_top
ustack: .fill 16384, 1, 0
ustack_top:
        .section .note.GNU-stack, "", @progbits
