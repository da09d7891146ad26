# Benchmark: read a whole disk through the HAL block device in 127-sector requests, PASSES
# times (the disk size comes from block INFO), then leave through the debug-exit port.
        .include "common.inc"
        .set SUBMIT, 1
        .set PASSES, 4
        .set CHUNK, 127
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        movl $0x00010002, info                  # channel 2 (block), op 1 (INFO)
        movl $12, info + 4
        mov $SUBMIT, %eax
        mov $info, %ebx
        vmcall
        test %eax, %eax
        jnz fail
        mov $PASSES, %edi
pass:   xor %esi, %esi                          # next sector
next:   mov info + 16, %ecx                     # sectors on the disk
        sub %esi, %ecx
        jz done_pass
        cmp $CHUNK, %ecx
        jbe 1f
        mov $CHUNK, %ecx
1:      movl $0x00020002, req                   # block READ
        mov %ecx, %eax
        shl $9, %eax
        add $8, %eax
        mov %eax, req + 4
        mov %esi, req + 16
        mov %ecx, req + 20
        mov $SUBMIT, %eax
        mov $req, %ebx
        vmcall
        test %eax, %eax
        jnz fail
        add %ecx, %esi
        jmp next
done_pass:
        dec %edi
        jnz pass
        exit_with 0
fail:   exit_with 2
        .bss
        .align 16
info:   .fill 32, 1, 0
        .align 16
req:    .fill 16 + 8 + CHUNK * 512, 1, 0
