# Benchmark: HAL round trips: 50000 console WRITE packets of length 0 (a complete SUBMIT that
# shows nothing), then leave through the debug-exit port.
        .include "common.inc"
        .set SUBMIT, 1
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        movl $0x00010001, pkt                   # channel 1 (console), op 1 (WRITE)
        movl $0, pkt + 4
        mov $50000, %ecx
1:      mov $SUBMIT, %eax
        mov $pkt, %ebx
        vmcall
        test %eax, %eax
        jnz fail
        loop 1b
        exit_with 0
fail:   exit_with 2
        .bss
        .align 16
pkt:    .fill 16, 1, 0
