# Stores to live page tables and directories, in a loop, with the instructions a kernel uses:
# MOV from a register and of an immediate, XCHG (all three carried out by the monitor), and
# AND/OR/ADD, byte stores and REP STOS (run natively); through a page table that maps itself;
# to a table shared by two address spaces while the other one is current; and a flood of
# stores rewriting a whole table. After each change the guest invalidates (INVLPG or a CR3
# reload) and checks what it reads, as it may rely on architecturally: it never depends on a
# stale TLB entry. Each failed check prints a line; the last line gives the error count.
        .include "common.inc"
        .set V, 0x400000                # pt_v[0] maps V; pt_v[1] maps pt_v itself at V + 0x1000
        .set V2, 0x800000               # the 4 MiB at V2 is pt_v or pt_w (pd[2] rewritten)
        .set D, 0x200000                # data pages D + i * 0x1000 hold 0xDA7A0000 + i
        .set ROUNDS, 40
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        mov $D, %edi                    # data pages
        mov $0xDA7A0000, %eax
        mov $16, %ecx
1:      mov %eax, (%edi)
        add $0x1000, %edi
        inc %eax
        loop 1b
        identity_map pt0
        mov $pt0, %eax
        or $3, %eax
        mov %eax, pd_a
        mov %eax, pd_b
        mov $pt_v, %eax
        or $3, %eax
        mov %eax, pd_a + 4              # V: pt_v in both address spaces
        mov %eax, pd_b + 4
        mov %eax, pd_a + 8              # V2: pt_v too, until rewritten
        movl $D + 3, pt_v
        mov $pt_v, %eax
        or $3, %eax
        mov %eax, pt_v + 4              # V + 0x1000 -> pt_v
        mov $D + 0x1003, %eax           # pt_w maps D + 1, D + 2, ... from V2
        mov $pt_w, %edi
        mov $16, %ecx
1:      stosl
        add $0x1000, %eax
        loop 1b
        mov $pd_a, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80010000, %eax            # PG | WP
        mov %eax, %cr0

        mov $ROUNDS, %ebp
round:
        mov %ebp, %ebx
        and $7, %ebx                    # this round's page: D + ebx * 0x1000
        # MOV reg -> PTE, INVLPG
        mov %ebx, %eax
        shl $12, %eax
        add $D + 3, %eax
        mov $pt_v, %edi
pte_store:
        mov %eax, (%edi)
after_store:
        invlpg V
        mov V, %eax
        mov %ebx, %edx
        call expect
        # MOV imm -> PTE, CR3 reload; the flags survive the store
        cmp $1, %ebx                    # CF = (ebx < 1)
        movl $D + 0x5003, pt_v
        setc %cl
        movzbl %cl, %ecx
        xor %edx, %edx
        test %ebx, %ebx
        sete %dl
        cmp %edx, %ecx
        je 1f
        puts m_flags
        incl errors
1:      mov $pd_a, %eax
        mov %eax, %cr3
        mov V, %eax
        mov $5, %edx
        call expect
        # XCHG: the old PTE comes back
        mov $D + 0x6003, %eax
        xchg %eax, pt_v
        invlpg V
        cmp $D + 0x5023, %eax           # the processor set A when V was read
        je 1f
        puts m_xchg
        incl errors
1:      mov V, %eax
        mov $6, %edx
        call expect
        # AND / OR / ADD on the PTE (flags written: run natively)
        andl $~0x2000, pt_v             # 6 -> 4
        invlpg V
        mov V, %eax
        mov $4, %edx
        call expect
        orl $0x1000, pt_v               # 4 -> 5
        invlpg V
        mov V, %eax
        mov $5, %edx
        call expect
        addl $0x2000, pt_v              # 5 -> 7
        invlpg V
        mov V, %eax
        mov $7, %edx
        call expect
        # a byte store into the frame number
        movb $0x30, pt_v + 1            # D + 0x3003
        invlpg V
        mov V, %eax
        mov $3, %edx
        call expect
        # through the page table mapping itself: the store goes to pt_v[0] via V + 0x1000
        mov %ebx, %eax
        shl $12, %eax
        add $D + 0x8003, %eax
        mov %eax, V + 0x1000
        invlpg V
        mov V, %eax
        lea 8(%ebx), %edx
        call expect
        # a PDE store: V2 through pt_w, then back to pt_v (pt_v[0] maps D + 8 + ebx now)
        mov $pt_w, %eax
        or $3, %eax
        mov %eax, pd_a + 8
        mov $pd_a, %eax
        mov %eax, %cr3
        mov V2, %eax
        mov $1, %edx
        call expect
        mov $pt_v, %eax
        or $3, %eax
        mov %eax, pd_a + 8
        invlpg V2
        mov V2, %eax
        lea 8(%ebx), %edx
        call expect
        # the other address space: store into the shared pt_v while A is current, then switch
        movl $D + 0x9003, pt_v
        mov $pd_b, %eax
        mov %eax, %cr3
        mov V, %eax
        mov $9, %edx
        call expect
        mov $pd_a, %eax
        mov %eax, %cr3
        # a flood: rewrite pt_w whole with MOVs, then with REP STOS, reading between
        mov V2, %eax                    # use pt_v at V2 once more
        mov $pt_w, %eax
        or $3, %eax
        mov %eax, pd_a + 8
        mov $pd_a, %eax
        mov %eax, %cr3
        mov V2 + 0x1000, %eax           # pt_w[1] maps D + 2
        mov $2, %edx
        call expect
        mov %ebx, %eax                  # every entry of pt_w -> D + ebx
        shl $12, %eax
        add $D + 3, %eax
        mov $pt_w, %edi
        mov $1024, %ecx
1:      mov %eax, (%edi)
        add $4, %edi
        loop 1b
        mov $pd_a, %eax
        mov %eax, %cr3
        mov V2 + 0x3000, %eax
        mov %ebx, %edx
        call expect
        mov V2 + 0x3FF000, %eax
        mov %ebx, %edx
        call expect
        mov $D + 0x4003, %eax           # REP STOS: every entry -> D + 4
        mov $pt_w, %edi
        mov $1024, %ecx
        rep stosl
        mov $pd_a, %eax
        mov %eax, %cr3
        mov V2 + 0x5000, %eax
        mov $4, %edx
        call expect
        mov $D + 0x1003, %eax           # pt_w as it was: D + 1 + i
        mov $pt_w, %edi
        mov $16, %ecx
1:      stosl
        add $0x1000, %eax
        loop 1b
        mov $pt_v, %eax
        or $3, %eax
        mov %eax, pd_a + 8
        mov $pd_a, %eax
        mov %eax, %cr3
        dec %ebp
        jnz round

        puts m_errors
        mov errors, %eax
        call print_hex
        call newline
        exit_with 0x15

# eax: the value read; edx: the data page it should come from
expect:
        add $0xDA7A0000, %edx
        cmp %edx, %eax
        je 1f
        incl errors
        push %eax
        puts m_bad
        call print_hex
        puts m_want
        mov %edx, %eax
        call print_hex
        call newline
        pop %eax
1:      ret

        .data
errors: .long 0
m_bad:  .asciz "read "
m_want: .asciz " want "
m_flags: .asciz "flags changed by a page-table store\n"
m_xchg: .asciz "xchg returned the wrong PTE\n"
m_errors: .asciz "errors "
        .bss
        .p2align 12
pd_a:   .fill 1024, 4, 0
pd_b:   .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
pt_v:   .fill 1024, 4, 0
pt_w:   .fill 1024, 4, 0
