# Arithmetic flags across a page fault between the flag producer and its consumer (Unicorn
# 2.1.4 with a code hook loses CF/OF/AF there: docs/unicorn.md). Every case produces flags,
# then touches a fresh page (a shadow fill under dbgvm: a #PF the guest never sees), then
# consumes the flags with SETC, JC and PUSHF. Run with paging off (first touches under the
# identity shadow), with paging on (shadow fills of present guest pages) and with a guest #PF
# handler that maps not-present pages (a reflected fault, returning through IRET).
        .include "common.inc"
        .set PAGES_FLAT, 0x300000       # paging off
        .set PAGES_PAGED, 0x480000      # paging on, present in the guest's tables
        .set PAGES_GUEST_PF, 0x500000   # paging on, not present: the guest's handler maps them
        .set FLAGS_MASK, 0x8d5          # OF SF ZF AF PF CF

        # flagcase PAGE, "PRODUCER": PRODUCER (instructions separated by ';') sets the flags,
        # a store to PAGE faults, then the line "flags setc/jc" is printed
        .macro flagcase page, producer
        \producer
        mov %ecx, \page
        consume
        .endm

        # load, push and read-modify-write as the faulting instruction
        .macro loadcase page, producer
        \producer
        mov \page, %edx
        consume
        .endm

        .macro pushcase page, producer
        mov %esp, %ebp
        mov $(\page + 0x10), %esp
        \producer
        push %eax
        mov %ebp, %esp
        consume
        .endm

        .macro consume
        setc %bl
        jnc 7f
        lea 2(%ebx), %ebx               # (flags untouched until report's PUSHF)
7:      call report
        .endm

        .macro all_cases base, push=1
        puts m_cmp
        flagcase \base + 0x00000, "mov $0x2000, %eax; mov $0x12e000, %esi; cmp %esi, %eax"
        flagcase \base + 0x01000, "mov $1, %eax; cmp $2, %eax"
        flagcase \base + 0x02000, "mov $0x12e000, %eax; cmp $0x2000, %eax"
        puts m_sub
        flagcase \base + 0x03000, "mov $0x10, %eax; sub $0x20, %eax"
        flagcase \base + 0x04000, "mov $0x80000000, %eax; sub $1, %eax"
        flagcase \base + 0x05000, "mov $5, %eax; neg %eax"
        puts m_add
        flagcase \base + 0x06000, "mov $0xfffff000, %eax; add $0x2000, %eax"
        flagcase \base + 0x07000, "mov $0x7fffffff, %eax; add $1, %eax"
        flagcase \base + 0x08000, "mov $0x0f, %eax; add $1, %eax"
        puts m_inc
        flagcase \base + 0x09000, "stc; mov $-1, %eax; inc %eax"
        flagcase \base + 0x0a000, "clc; mov $0x7fffffff, %eax; inc %eax"
        flagcase \base + 0x0b000, "stc; mov $0x12e000, %eax; dec %eax"
        puts m_shift
        flagcase \base + 0x0c000, "mov $0x80001000, %eax; shl $1, %eax"
        flagcase \base + 0x0d000, "mov $0x30000000, %eax; mov $3, %cl; shl %cl, %eax"
        flagcase \base + 0x0e000, "mov $0x3, %eax; shr $1, %eax"
        flagcase \base + 0x0f000, "mov $0x80000001, %eax; sar $1, %eax"
        puts m_carry
        flagcase \base + 0x10000, "mov $-1, %eax; add $1, %eax; mov $0x7fff0000, %edx; adc $0x10000, %edx"
        flagcase \base + 0x11000, "mov $0, %eax; sub $1, %eax; mov $0x1000, %edx; sbb $0x2000, %edx"
        flagcase \base + 0x12000, "mov $0, %eax; sub $1, %eax; mov $0, %edx; sbb $0, %edx; sbb $0, %edx"
        puts m_other
        flagcase \base + 0x13000, "mov $0x80000000, %eax; test %eax, %eax"
        flagcase \base + 0x14000, "mov $0x10000, %eax; imul %eax, %eax"
        flagcase \base + 0x15000, "mov $4, %eax; bt $2, %eax"
        flagcase \base + 0x16000, "mov $0x12e000, %eax; mov $0x2000, %esi; cmp %esi, %eax; stc"
        puts m_kinds
        loadcase \base + 0x17000, "mov $0x2000, %eax; cmp $0x12e000, %eax"
        .if \push                     # (not with the guest's handler: no stack for the #PF)
        pushcase \base + 0x18000, "mov $0x2000, %eax; cmp $0x12e000, %eax"
        .endif
        flagcase \base + 0x19000, "mov $0x2000, %eax; cmp $0x12e000, %eax; adcl $0, \base + 0x1a000"
        .endm

        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        set_gate 14, pf_handler, 0x8E
        mov $0x5a5a5a5a, %ecx

        puts m_flat
        all_cases PAGES_FLAT

        identity_map pt0                # 0..4 MiB
        mov $pt1, %edi                  # 4..8 MiB, PAGES_GUEST_PF.. not present
        mov $0x400003, %eax
        mov $1024, %ecx
1:      cmp $PAGES_GUEST_PF, %eax
        jb 2f
        cmp $PAGES_GUEST_PF + 0x100000, %eax
        jae 2f
        movl $0, (%edi)
        add $4, %edi
        jmp 3f
2:      stosl
3:      add $0x1000, %eax
        loop 1b
        mov $pt0 + 3, %eax
        mov %eax, pd
        mov $pt1 + 3, %eax
        mov %eax, pd + 4
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80010000, %eax            # PG | WP
        mov %eax, %cr0
        mov $0x5a5a5a5a, %ecx

        puts m_paged
        all_cases PAGES_PAGED
        puts m_guest_pf
        all_cases PAGES_GUEST_PF, 0
        puts m_faults
        mov guest_faults, %eax
        call print_hex
        call newline
        exit_with 0

report:                                 # prints "flags setc/jc" (eflags masked, bl)
        pushf
        pop %eax
        and $FLAGS_MASK, %eax
        call print_hex
        puts m_sep
        movzbl %bl, %eax
        call print_hex
        call newline
        ret

pf_handler:                             # map the page at CR2 (identity), return through IRET
        push %eax
        push %edx
        mov %cr2, %eax
        mov %eax, %edx
        sub $0x400000, %edx
        shr $12, %edx
        and $~0xfff, %eax
        or $3, %eax
        mov %eax, pt1(,%edx,4)
        incl guest_faults
        pop %edx
        pop %eax
        add $4, %esp
        iret

        .data
guest_faults: .long 0
m_flat:   .asciz "== paging off\n"
m_paged:  .asciz "== paging on, shadow fills\n"
m_guest_pf: .asciz "== paging on, guest #PF handler\n"
m_faults: .asciz "guest page faults: "
m_cmp:    .asciz "cmp\n"
m_sub:    .asciz "sub/neg\n"
m_add:    .asciz "add\n"
m_inc:    .asciz "inc/dec\n"
m_shift:  .asciz "shifts\n"
m_carry:  .asciz "adc/sbb\n"
m_other:  .asciz "test/imul/bt/stc\n"
m_kinds:  .asciz "load/push/rmw\n"
m_sep:    .asciz " "

        .bss
        .p2align 12
pd:     .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
pt1:    .fill 1024, 4, 0
