# A frame for random code (tests/test_random_insns.py writes it at `fuzz_code` after loading).
# The last character of the command line picks where it runs: '0' virtual ring 0, paging off;
# 'p' virtual ring 0, paging on (0..4 MiB identity-mapped); '3' virtual ring 3, paging on, the
# code page and one stack page user-accessible, everything else supervisor-only.
# Every vector has a gate; its handler resumes one byte past the faulting EIP when that lies in
# the code page (so that decoding resynchronises and the run goes on), else at `fuzz_code`,
# with fresh segments and stack; after the code, a jump back to its start.
        .include "common.inc"
        .set FUZZ_SIZE, 4096 - 8

        .macro to_ring entry
        cmpb $'3', mode
        jne 1f
        push $UDATA
        push $user_stack_top
        push $0x202
        push $UCODE
        push \entry
        iret
1:      mov $KDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        mov $stack_top, %esp
        push $0x2
        push $KCODE
        push \entry
        iret
        .endm

        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mode_char
        mov %al, mode
        call setup_tables
        mov $0, %ecx                    # every vector: a stub pushing its number
2:      mov %ecx, %eax
        shl $4, %eax
        add $stubs, %eax
        mov %ax, idt(,%ecx,8)
        movw $KCODE, idt + 2(,%ecx,8)
        movw $0xEE00, idt + 4(,%ecx,8)  # present DPL-3 interrupt gate: INT n works anywhere
        shr $16, %eax
        mov %ax, idt + 6(,%ecx,8)
        inc %ecx
        cmp $256, %ecx
        jne 2b
        cmpb $'0', mode
        je 3f
        mov $pt0, %edi                  # identity map 0..4 MiB, supervisor
        mov $3, %eax
        mov $1024, %ecx
4:      stosl
        add $0x1000, %eax
        loop 4b
        mov $fuzz_code, %eax
        shr $12, %eax
        orl $4, pt0(,%eax,4)
        mov $user_stack, %eax
        shr $12, %eax
        orl $4, pt0(,%eax,4)
        mov $pt0, %eax
        or $7, %eax
        mov %eax, pd
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80010000, %eax
        mov %eax, %cr0
3:      to_ring $fuzz_code

# stack: vector, then the CPU's frame (with an error code for 8, 10-14 and 17 when raised by an
# exception; INT n pushes none, which only makes the saved EIP read wrong: then restart)
common:
        mov $KDATA, %ax
        mov %ax, %ds
        mov (%esp), %ecx
        mov 4(%esp), %eax               # EIP, unless an error code comes first
        cmp $8, %ecx
        je 1f
        cmp $17, %ecx
        je 1f
        cmp $10, %ecx
        jb 2f
        cmp $14, %ecx
        ja 2f
1:      mov 8(%esp), %eax
2:      incl faults
        inc %eax                        # one byte past the faulting instruction's start
        cmp $fuzz_code, %eax
        jb 3f
        cmp $fuzz_end, %eax
        jb 4f
3:      mov $fuzz_code, %eax
4:      mov %eax, resume
        to_ring resume

        .p2align 4
stubs:                                  # 16 bytes each: push imm32; jmp rel32
        .set vec, 0
        .rept 256
        .byte 0x68
        .long vec
        .byte 0xe9
        .long common - (. + 4)
        .p2align 4
        .set vec, vec + 1
        .endr

        .p2align 12
        .globl fuzz_code
fuzz_code:
        .fill FUZZ_SIZE, 1, 0x90
fuzz_end:
        jmp fuzz_code
        .p2align 12

        .data
mode:   .byte 0
        .align 4
resume: .long 0
        .globl faults
faults: .long 0
        .bss
        .p2align 12
pd:     .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
user_stack: .fill 4096, 1, 0
user_stack_top:
