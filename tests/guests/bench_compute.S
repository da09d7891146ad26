# Benchmark: a register-only compute loop (4 instructions an iteration), then debug exit.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mov $25000000, %ecx
        xor %eax, %eax
loop:   add %ecx, %eax
        xor %eax, %ebx
        dec %ecx
        jnz loop
        exit_with 0
