# Runs forever (a debugger interrupts it): counts in a loop and bumps `counter` in memory.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        xor %eax, %eax
spin:   inc %eax
        mov %eax, counter
        jmp spin

        .data
        .globl counter
counter: .long 0
