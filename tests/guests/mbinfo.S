# What the Multiboot loader handed over: EAX, the info flags, memory sizes, the command line,
# and the modules (count, and each one's command line and first bytes).
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $stack_top, %esp
        mov %ebx, %edi
        puts m_magic
        call print_hex
        puts m_flags
        mov 0(%edi), %eax
        and $0x4f, %eax                 # memory, boot device, cmdline, modules, mmap
        call print_hex
        puts m_lower
        mov 4(%edi), %eax
        call print_hex
        puts m_upper
        mov 8(%edi), %eax
        call print_hex
        call newline
        puts m_cmdline
        mov 16(%edi), %esi
        call print_string
        call newline
        puts m_mods
        mov 20(%edi), %eax
        call print_hex
        call newline
        mov 20(%edi), %ecx
        mov 24(%edi), %ebx
        test %ecx, %ecx
        jz 2f
1:      puts m_mod
        mov 8(%ebx), %esi
        call print_string
        puts m_data
        mov 4(%ebx), %eax
        sub 0(%ebx), %eax
        call print_hex
        puts m_first
        mov 0(%ebx), %eax
        mov (%eax), %eax
        call print_hex
        call newline
        add $16, %ebx
        loop 1b
2:      exit_with 0x02

        .data
m_magic: .asciz "eax="
m_flags: .asciz " flags&4f="
m_lower: .asciz " mem_lower="
m_upper: .asciz " mem_upper="
m_cmdline: .asciz "cmdline="
m_mods: .asciz "mods="
m_mod:  .asciz "module "
m_data: .asciz " size="
m_first: .asciz " first="
