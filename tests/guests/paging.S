# Paging under the shadow MMU: enable paging with CR0.WP and CR4.PSE, watch the accessed and
# dirty bits, remap a page with INVLPG, take #PF for a not-present page (fixed by mapping a
# 4 MiB page) and for a read-only one (fixed by making it writable), then run a ring-3 task
# that touches supervisor pages (#PF with the U bit) and comes back through a DPL-3 gate.
        .include "common.inc"
        .set PT1_VADDR, 0x400000
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        call setup_tables
        set_gate 14, pf_handler, 0x8E
        set_gate 0x80, syscall_handler, 0xEE

        movl $0x11111111, 0x200000
        movl $0x22222222, 0x201000
        movl $0x33333333, 0x202000
        identity_map pt0  # identity-map 0..4 MiB, supervisor read/write
        mov $user_page, %eax            # the user code and stack pages: add U
        shr $12, %eax
        orl $4, pt0(,%eax,4)
        mov $user_stack_page, %eax
        shr $12, %eax
        orl $4, pt0(,%eax,4)
        movl $0x200003, pt1             # 0x400000 -> 0x200000 read/write
        movl $0x202001, pt1 + 4         # 0x401000 -> 0x202000 read-only
        mov $pt0, %eax
        or $7, %eax
        mov %eax, pd
        mov $pt1, %eax
        or $7, %eax
        mov %eax, pd + 4
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x10, %eax                  # PSE
        mov %eax, %cr4
        mov %cr0, %eax
        or $0x80010000, %eax            # PG | WP
        mov %eax, %cr0
        puts m_on

        mov PT1_VADDR, %eax             # read: sets A in PDE 1 and PTE 0
        puts m_read
        call print_hex
        call show_ad
        movl $5, PT1_VADDR + 4          # write: sets D
        puts m_write
        call show_ad

        movl $0x201003, pt1             # remap to 0x201000
        invlpg PT1_VADDR
        mov PT1_VADDR, %eax
        puts m_remap
        call print_hex
        call newline

        mov 0x800000 + marker, %eax     # PDE 2 not present: #PF, handler maps a 4 MiB page
        puts m_big
        call print_hex
        call newline

        movl $0x44444444, PT1_VADDR + 0x1000   # read-only page: #PF(3), handler makes it RW
        mov PT1_VADDR + 0x1000, %eax
        puts m_ro
        call print_hex
        call newline
        mov 0x202000, %eax              # the write went to physical 0x202000
        puts m_phys
        call print_hex
        call newline

        push $UDATA
        push $user_stack_top
        push $0x202
        push $UCODE
        push $user_entry
        iret

show_ad:                                # prints " pde.A=x pte.AD=xx"
        push %eax
        puts m_pde
        mov pd + 4, %eax
        and $0x20, %eax
        call print_hex
        puts m_pte
        mov pt1, %eax
        and $0x60, %eax
        call print_hex
        call newline
        pop %eax
        ret

# #PF frame: err eip cs eflags [esp ss]
pf_handler:
        push %eax
        mov $KDATA, %ax
        mov %ax, %ds
        puts m_pf
        mov %cr2, %eax
        call print_hex
        puts m_err
        mov 4(%esp), %eax
        call print_hex
        call newline
        mov %cr2, %eax
        cmp $0x800000, %eax
        jb 1f
        cmp $0xc00000, %eax
        jae 1f
        movl $0x00000083, pd + 8        # 4 MiB page at physical 0, present, writable
        jmp 3f
1:      cmp $PT1_VADDR + 0x1000, %eax
        jb 2f
        cmp $PT1_VADDR + 0x2000, %eax
        jae 2f
        orl $2, pt1 + 4
        invlpg PT1_VADDR + 0x1000
        jmp 3f
2:      mov user_skip, %eax             # a user fault: skip the instruction
        add %eax, 8(%esp)
        mov $UDATA, %ax
        mov %ax, %ds
3:      pop %eax
        add $4, %esp
        iret

syscall_handler:
        mov $KDATA, %ax
        mov %ax, %ds
        puts m_back
        exit_with 0x09

        .p2align 12
user_page:
user_entry:
        movl $5, user_skip
user_read:
        mov marker, %eax                # supervisor page: #PF(5)
        movl $10, user_skip
user_write:
        movl $1, marker                 # supervisor page: #PF(7)
        int $0x80
user_skip: .long 0                      # on the user page, so user code can set it
        .p2align 12

        .data
marker: .long 0x600df00d
m_on:   .asciz "paging on\n"
m_read: .asciz "read "
m_write: .asciz "after write"
m_pde:  .asciz " pde.A="
m_pte:  .asciz " pte.AD="
m_remap: .asciz "after remap "
m_big:  .asciz "via 4M page "
m_ro:   .asciz "read-only page now "
m_phys: .asciz "physical 0x202000 "
m_pf:   .asciz "#PF cr2="
m_err:  .asciz " err="
m_back: .asciz "back in the kernel\n"
        .bss
        .p2align 12
pd:     .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
pt1:    .fill 1024, 4, 0
user_stack_page: .fill 4096, 1, 0
user_stack_top:
