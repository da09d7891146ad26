# What Debian's unmodified Linux kernel needs of the core, one case per run. The last character
# of the command line ("mode=X") picks it:
#   h  higher-half kernel: privileged instructions at 0xC0xxxxxx (paging maps 0xC0000000+ to
#      physical 0 as well as identity)
#   e  CLI as the last byte of a mapped page followed by a not-present page: the CLI executes,
#      then the fetch of the next instruction takes #PF there
#   i  INT3 (CC) and INT 3 (CD 03) at a higher-half address: the frame's EIP is past 1, 2 bytes
#   t  a TSS at linear 0xFF000000 (above guest RAM, mapped by paging) used by a ring-3 INT;
#      first a TSS reaching the monitor hole is refused
#   f  PUSHF shows the virtual IF (STI, CLI, interrupt and trap gates, IRET)
#   g/G a GDT sharing its page with a counter stored to 100,000 times (G: with paging), then
#      descriptors rewritten by a 2-byte store and by one 8-byte MMX store
#   y  SYSENTER/SYSEXIT between virtual rings 3 and 0; then SYSENTER with SYSENTER_CS = 0
#   d  #GP whose IDT gate is not present (#NP, contributory) with a task gate for #DF
#   r  triple fault (empty IDT, UD2)
#   v  INVLPG of a never-touched page, of a touched one, and of it again
#   c  1000 RDTSCs at virtual CPL 0 (trapped): the TSC difference across them
#   p  a PIT interrupt due during a spin loop of RDTSCs
#   x  UD2 whose IDT gate is not present: #NP with the IDT and EXT bits set
        .include "common.inc"
        .set HH, 0xC0000000
        .set SPARE, 0x38
        .set MSR_SYSENTER_CS, 0x174
        .set MSR_SYSENTER_ESP, 0x175
        .set MSR_SYSENTER_EIP, 0x176

        # show LABEL, SRC: print the string LABEL, then SRC (via %eax) in hex, then a newline
        .macro show label, src
        puts \label
        mov \src, %eax
        call print_hex
        call newline
        .endm

        .macro to_user entry
        push $UDATA
        push $user_stack_top
        push $0x202
        push $UCODE
        push $\entry
        iret
        .endm

        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mode_char
        mov %al, mode
        call setup_tables
        set_gate 13, gp_handler, 0x8E
        set_gate 14, pf_handler, 0x8E
        mov mode, %al
        cmp $'h', %al
        je mode_h
        cmp $'e', %al
        je mode_e
        cmp $'i', %al
        je mode_i
        cmp $'t', %al
        je mode_t
        cmp $'f', %al
        je mode_f
        cmp $'g', %al
        je mode_g
        cmp $'G', %al
        je mode_g
        cmp $'y', %al
        je mode_y
        cmp $'d', %al
        je mode_d
        cmp $'r', %al
        je mode_r
        cmp $'v', %al
        je mode_v
        cmp $'c', %al
        je mode_c
        cmp $'p', %al
        je mode_p
        cmp $'x', %al
        je mode_x
        cmp $'u', %al
        je mode_u
        cmp $'U', %al
        je mode_u
        exit_with 0x7e

# Identity-map 0..4 MiB and map 0xC0000000..0xC03FFFFF to the same physical pages (user
# accessible, so that ring-3 code runs too), CR0.PG|WP.
paging_on:
        mov $pt0, %edi
        mov $7, %eax
        mov $1024, %ecx
1:      stosl
        add $0x1000, %eax
        loop 1b
        mov $pt0, %eax
        or $7, %eax
        mov %eax, pd
        mov %eax, pd + 4 * (HH >> 22)
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80010000, %eax
        mov %eax, %cr0
        ret

# -- h: privileged instructions in a higher-half kernel ----------------------------------------
mode_h:
        call paging_on
        mov $hh_code + HH, %eax
        jmp *%eax
hh_code:
        call 1f
1:      pop %eax                        # where this runs
        puts m_eip
        call print_hex
        call newline
hh_cr0_read:
        mov %cr0, %eax
        mov %eax, %cr0
        cli
        sti
        lgdt gdt_desc
        mov %cr3, %ecx
        mov %ecx, %cr3
        puts m_cr0
        call print_hex
        call newline
        mov $hh_back, %eax
        jmp *%eax
hh_back:
        puts m_done
        exit_with 0x01

# -- e: an instruction that ends right before a not-present page -------------------------------
mode_e:
        call paging_on
        mov $edge_after, %eax
        shr $12, %eax
        movl $0, pt0(,%eax,4)           # the page after edge_cli is not present
        invlpg edge_after
        movl $edge_resume, pf_resume
        jmp edge_cli
edge_resume:
        puts m_done
        exit_with 0x02

# -- i: INT3 and INT 3 at a higher-half address ------------------------------------------------
mode_i:
        call paging_on
        set_gate 3, bp_handler, 0x8E
        mov $hh_int + HH, %eax
        jmp *%eax
hh_int:
hh_int3:
        int3
hh_int_3:
        .byte 0xcd, 0x03                # int $3, the two-byte form
        mov $int_back, %eax
        jmp *%eax
int_back:
        puts m_done
        exit_with 0x03

bp_handler:
        show m_bp, (%esp)
        iret

# -- t: a TSS above guest RAM, mapped through paging -------------------------------------------
mode_t:
        call paging_on
        mov $pt_hi, %eax
        or $3, %eax
        mov %eax, pd + 4 * (0xFF000000 >> 22)
        mov $tss_page, %eax
        or $3, %eax
        mov %eax, pt_hi                 # 0xFF000000 -> tss_page, supervisor
        movl $tss_stack_top, tss_page + 4       # ESP0
        movl $KDATA, tss_page + 8               # SS0
        set_gate 0x80, t_syscall, 0xEE
        # base 0xFFBFFF99, limit 0x67: the last byte is 0xFFC00000, in the monitor hole
        movl $0xFF990067, gdt + SPARE
        movl $0xFF0089BF, gdt + SPARE + 4
        movl $3, gp_skip                # ltr %ax: 0f 00 d8
        mov $SPARE, %ax
ltr_hole:
        ltr %ax
        movl $0, gp_skip
        # base 0xFF000000, limit 0x67, available 32-bit TSS
        movl $0x00000067, gdt + SPARE
        movl $0xFF008900, gdt + SPARE + 4
ltr_high:
        ltr %ax
        puts m_ltr
        to_user t_user
t_user:
        int $0x80
1:      jmp 1b

t_syscall:                              # frame: eip cs eflags esp ss
        mov $KDATA, %ax                 # IRET to ring 3 nulled DS
        mov %ax, %ds
        show m_esp, %esp
        show m_ueip, (%esp)
        show m_ucs, 4(%esp)
        show m_uesp, 12(%esp)
        show m_uss, 16(%esp)
        exit_with 0x04

# -- f: PUSHF and the virtual IF ---------------------------------------------------------------
mode_f:
        set_gate 0x40, f_intgate, 0x8E
        set_gate 0x41, f_trapgate, 0x8F
        sti
        call show_if                    # 1
        cli
        call show_if                    # 0
        sti
        int $0x40                       # handler: 0
        call show_if                    # 1: IRET restored IF
        int $0x41                       # handler: 1 (a trap gate keeps IF)
        cli
        int $0x41                       # handler: 0
        call show_if                    # 0: IRET restored IF = 0
        puts m_done
        exit_with 0x05

f_intgate:
        call show_if
        iret
f_trapgate:
        call show_if
        iret

show_if:                                # print "IF=x" from PUSHF
        push %eax
        pushf
        pop %eax
        shr $9, %eax
        and $1, %eax
        puts m_if
        call print_hex
        call newline
        pop %eax
        ret

# -- g, G: a GDT on the same page as hot data --------------------------------------------------
mode_g:
        cmpb $'G', mode
        jne 1f
        call paging_on
1:      movl $0x5eed1000, 0x1000
        movl $0x5eed2000, 0x2000
        movl $0x5eed3000, 0x3000
        mov $gdt, %esi
        mov $hot_gdt, %edi
        mov $(gdt_end - gdt) / 4, %ecx
        rep movsl
        lgdt hot_gdt_desc
        ljmp $KCODE, $2f
2:      mov $KDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $100000, %ecx
hot_loop:
hot_store:
        mov %ecx, hot_counter
        dec %ecx
        jnz hot_loop
hot_loop_end:
        show m_counter, hot_counter

        mov $SPARE, %ax
        mov %ax, %fs
        show m_fs, %fs:0x1000           # base 0: physical 0x1000
hot_movw:
        movw $0x1000, hot_gdt + SPARE + 2
        mov $SPARE, %ax
        mov %ax, %fs
        show m_fs, %fs:0x1000           # base 0x1000: physical 0x2000
        movq new_spare, %mm0
hot_movq:
        movq %mm0, hot_gdt + SPARE      # one 8-byte store: base 0x2000
        emms
        mov $SPARE, %ax
        mov %ax, %fs
        show m_fs, %fs:0x1000           # base 0x2000: physical 0x3000
        puts m_done
        exit_with 0x06

# -- y: SYSENTER / SYSEXIT ---------------------------------------------------------------------
mode_y:
        set_gate 0x80, y_syscall, 0xEE
        xor %edx, %edx
        mov $MSR_SYSENTER_CS, %ecx
        mov $KCODE, %eax
        wrmsr
        mov $MSR_SYSENTER_ESP, %ecx
        mov $sysenter_stack_top, %eax
        wrmsr
        mov $MSR_SYSENTER_EIP, %ecx
        mov $sysenter_entry, %eax
        wrmsr
        to_user y_user

y_user:
        mov $UDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov $0x11111111, %ebx
        mov $0x22222222, %ecx
        mov $0x33333333, %edx
        mov $0x44444444, %esi
        mov $0x55555555, %edi
        mov $0x66666666, %ebp
y_sysenter:
        sysenter
y_return:                               # SYSEXIT returns here (EDX)
        mov %eax, u_regs
        mov %ebx, u_regs + 4
        mov %ecx, u_regs + 8
        mov %edx, u_regs + 12
        mov %esi, u_regs + 16
        mov %edi, u_regs + 20
        mov %ebp, u_regs + 24
        mov %esp, u_regs + 28
        xor %eax, %eax
        mov %cs, %ax
        mov %eax, u_regs + 32
        mov %ss, %ax
        mov %eax, u_regs + 36
        pushf
        pop %eax
        mov %eax, u_regs + 40
        movl $1, gp_skip
y_cli:
        cli                             # at virtual CPL 3: #GP(0)
        mov $1, %eax                    # the kernel clears SYSENTER_CS
        int $0x80
        movl $2, gp_skip
y_sysenter0:
        sysenter                        # #GP(0)
        mov $2, %eax                    # the kernel reports and exits
        int $0x80
1:      jmp 1b

sysenter_entry:
        mov %esp, k_regs + 24
        mov %ebx, k_regs
        mov %ecx, k_regs + 4
        mov %edx, k_regs + 8
        mov %esi, k_regs + 12
        mov %edi, k_regs + 16
        mov %ebp, k_regs + 20
        pushf
        pop %eax
        mov %eax, k_regs + 28
        xor %eax, %eax
        mov %cs, %ax
        mov %eax, k_regs + 32
        mov %ss, %ax
        mov %eax, k_regs + 36
y_k_cr0:
        mov %cr0, %eax                  # at virtual CPL 0 this does not fault
        movl $1, k_regs + 40
        mov $0x600dcafe, %eax
        mov $y_return, %edx
        mov $user_stack_top - 16, %ecx
        sti
        sysexit

y_syscall:
        cmp $1, %eax
        jne 1f
        xor %eax, %eax
        xor %edx, %edx
        mov $MSR_SYSENTER_CS, %ecx
        wrmsr
        iret
1:      puts m_kregs
        mov $k_regs, %ebx
        mov $11, %ecx
        call print_words
        puts m_uregs
        mov $u_regs, %ebx
        mov $11, %ecx
        call print_words
        exit_with 0x07

print_words:                            # ecx words at ebx, space-separated, then a newline
        mov (%ebx), %eax
        call print_hex
        mov $' ', %al
        outb %al, $0xe9
        add $4, %ebx
        loop print_words
        call newline
        ret

# -- d: #DF through a task gate ----------------------------------------------------------------
mode_d:
        movl $TSSSEL << 16, idt + 8 * 8
        movl $0x00008500, idt + 8 * 8 + 4       # present task gate, TSS selector 0x28
        set_gate 13, gp_handler, 0x0E           # #GP: a not-present interrupt gate
        mov $0x80, %ax                  # index 16: beyond the GDT's limit
df_insn:
        mov %ax, %fs                    # #GP(0x80), delivering it #NP(0x6a+EXT): #DF
        exit_with 0x08

# -- r: triple fault ---------------------------------------------------------------------------
mode_r:
        lidt empty_idt
reset_insn:
        ud2
        exit_with 0x09

# -- v: INVLPG -------------------------------------------------------------------------------
mode_v:
        call paging_on
invlpg_untouched:
        invlpg 0x300000
        mov 0x300000, %eax
invlpg_touched:
        invlpg 0x300000
invlpg_again:
        invlpg 0x300000
        puts m_done
        exit_with 0x0a

# -- c: the time charge of a trapped RDTSC -----------------------------------------------------
mode_c:
c_first:
        rdtsc
        mov %eax, %ebx
        mov $1000, %ecx
1:      rdtsc
        dec %ecx
        jnz 1b
c_last:
        rdtsc
        sub %ebx, %eax
        show m_tsc, %eax
        exit_with 0x0b

# -- p: a PIT interrupt during an RDTSC spin ---------------------------------------------------
mode_p:
        set_gate 0x20, p_timer, 0x8E
        mov $1193, %ax                  # 1193 / 1.193182 MHz: about 1 ms
        call setup_timer
        rdtsc
        mov %eax, p_t0
        sti
        mov $5000, %ecx
1:      rdtsc
        dec %ecx
        jnz 1b
        movl $1, p_loop_done
        cmpl $0, p_fired
        jne 2f
        hlt                             # the interrupt did not come during the loop: wait
2:      cli
        show m_fired, p_fired
        show m_done_at, p_done_at_irq
        show m_ecx, p_ecx
        mov p_t_irq, %eax
        sub p_t0, %eax
        show m_tsc, %eax
        exit_with 0x0c

p_timer:
        push %eax
        push %edx
        rdtsc
        mov %eax, p_t_irq
        mov %ecx, p_ecx
        mov p_loop_done, %eax
        mov %eax, p_done_at_irq
        incl p_fired
        mov $0xff, %al                  # mask the PIT: once is enough
        outb %al, $0x21
        mov $0x20, %al
        outb %al, $0x20
        pop %edx
        pop %eax
        iret

# -- x: a fault while delivering an exception has EXT set ---------------------------------------
mode_x:
        set_gate 11, np_handler, 0x8E
        set_gate 6, gp_handler, 0x0E            # #UD: a not-present interrupt gate
np_ud:
        ud2
        puts m_done
        exit_with 0x0d

np_handler:                             # frame: err eip cs eflags; skips the UD2
        push %eax
        puts m_np
        mov 4(%esp), %eax
        call print_hex
        puts m_at
        mov 8(%esp), %eax
        call print_hex
        call newline
        addl $2, 8(%esp)
        pop %eax
        add $4, %esp
        iret

# -- u: RDTSC at CPL 3 (Linux's vDSO clock_gettime); U: with the guest's own CR4.TSD set ---
mode_u:
        set_gate 0x80, u_syscall, 0xEE
        movl $2, gp_skip                # rdtsc: 0f 31
        cmpb $'U', mode
        jne 1f
        mov %cr4, %eax
        or $4, %eax                     # TSD: RDTSC only at CPL 0
        mov %eax, %cr4
1:      to_user u_first
u_first:
        rdtsc
        mov %eax, %ebx
u_second:
        rdtsc
        sub %ebx, %eax
        int $0x80
1:      jmp 1b

u_syscall:
        mov $KDATA, %bx                 # IRET to ring 3 nulled DS
        mov %bx, %ds
        show m_tsc, %eax
        exit_with 0x0e

# -- fault handlers ----------------------------------------------------------------------------
# frame: err eip cs eflags [esp ss]. Skips gp_skip bytes, or ends the run when that is 0.
gp_handler:
        push %eax
        push %ds
        mov $KDATA, %ax
        mov %ax, %ds
        puts m_gp
        mov 8(%esp), %eax
        call print_hex
        puts m_at
        mov 12(%esp), %eax
        call print_hex
        call newline
        mov gp_skip, %eax
        test %eax, %eax
        jz 1f
        add %eax, 12(%esp)
        pop %ds
        pop %eax
        add $4, %esp
        iret
1:      puts m_unexpected
        exit_with 0x7d

# Resumes at pf_resume (once), or ends the run when that is 0.
pf_handler:
        push %eax
        puts m_pf
        mov %cr2, %eax
        call print_hex
        puts m_err
        mov 4(%esp), %eax
        call print_hex
        puts m_at
        mov 8(%esp), %eax
        call print_hex
        call newline
        mov pf_resume, %eax
        test %eax, %eax
        jz 1f
        mov %eax, 8(%esp)
        movl $0, pf_resume
        pop %eax
        add $4, %esp
        iret
1:      puts m_unexpected
        exit_with 0x7c

# CLI is the last byte of edge_page; the page after it is made not present.
        .p2align 12
edge_page:
        .fill 4095, 1, 0x90
edge_cli:
        cli
edge_after:
        .fill 4096, 1, 0xcc

        .data
mode:   .byte 0
        .align 4
gp_skip: .long 0
pf_resume: .long 0
p_t0:   .long 0
p_t_irq: .long 0
p_ecx:  .long 0
p_fired: .long 0
p_loop_done: .long 0
p_done_at_irq: .long 0
k_regs: .fill 11, 4, 0
u_regs: .fill 11, 4, 0
        .align 8
new_spare: .quad 0x00cf92002000ffff     # flat data, base 0x2000
empty_idt: .word 0
        .long 0
hot_gdt_desc: .word gdt_end - gdt - 1
        .long hot_gdt
m_eip:  .asciz "running at "
m_cr0:  .asciz "cr0 "
m_done: .asciz "done\n"
m_bp:   .asciz "#BP eip="
m_ltr:  .asciz "ltr 0xff000000 done\n"
m_esp:  .asciz "kernel esp "
m_ueip: .asciz "user eip "
m_ucs:  .asciz "user cs "
m_uesp: .asciz "user esp "
m_uss:  .asciz "user ss "
m_if:   .asciz "IF="
m_counter: .asciz "counter "
m_fs:   .asciz "fs:0x1000 "
m_kregs: .asciz "kernel: "
m_uregs: .asciz "user: "
m_tsc:  .asciz "tsc delta "
m_fired: .asciz "fired "
m_done_at: .asciz "loop done at irq "
m_ecx:  .asciz "ecx at irq "
m_gp:   .asciz "#GP err="
m_pf:   .asciz "#PF cr2="
m_np:   .asciz "#NP err="
m_err:  .asciz " err="
m_at:   .asciz " eip="
m_unexpected: .asciz "unexpected\n"
        # the GDT copy and a hot counter on one page
        .p2align 12
hot_gdt: .fill 8, 8, 0
hot_counter: .long 0
        .bss
        .p2align 12
pd:     .fill 1024, 4, 0
pt0:    .fill 1024, 4, 0
pt_hi:  .fill 1024, 4, 0
tss_page: .fill 4096, 1, 0
        .fill 4096, 1, 0
tss_stack_top:
        .fill 4096, 1, 0
sysenter_stack_top:
        .fill 4096, 1, 0
user_stack_top:
