# Benchmark: CLI/STI in a loop: two emulated instructions (two traps) an iteration.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mov $50000, %ecx
loop:   cli
        sti
        dec %ecx
        jnz loop
        exit_with 0
