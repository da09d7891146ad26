/*
 * vdso6: a static i386 Linux program without libc that makes its system calls the way glibc
 * does, through AT_SYSINFO (__kernel_vsyscall in the vDSO, which enters the kernel with
 * SYSENTER), including one with six arguments, whose sixth travels in EBP.
 *
 *   open("/bin/busybox", O_RDONLY)                      5 = open
 *   mmap2(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 1)    192 = mmap2 (6th argument: page 1)
 *   pread64(fd, buf, 64, 4096, 0)                       180 = pread64 (offset low, high)
 *   write(1, line, n)                                   4 = write
 *   exit_group(0 or 1)                                  252 = exit_group
 *
 * The mapped page's first 64 bytes must be the file's bytes at offset 4096. One line on
 * stdout: "vdso6: sysinfo=0x... mmap2=0x... bytes=<first 8 bytes in hex> match", exit 0; or
 * "vdso6: FAIL <what> ...", exit 1. Registers at the system calls (i386 ABI): EAX number,
 * then EBX, ECX, EDX, ESI, EDI, EBP.
 */
        .set SYS_write, 4
        .set SYS_open, 5
        .set SYS_pread64, 180
        .set SYS_mmap2, 192
        .set SYS_exit_group, 252
        .set AT_NULL, 0
        .set AT_SYSINFO, 32
        .set O_RDONLY, 0
        .set PROT_READ, 1
        .set MAP_PRIVATE, 2
        .set COMPARED, 64

        .text
        .globl _start
_start:
        /* the initial stack: argc, argv[0..argc-1], NULL, envp..., NULL, auxv pairs */
        mov     (%esp), %ecx
        lea     8(%esp,%ecx,4), %edi            /* envp[0] */
1:      mov     (%edi), %eax
        add     $4, %edi
        test    %eax, %eax
        jnz     1b                              /* edi: the first auxv pair */
2:      mov     (%edi), %eax
        cmp     $AT_NULL, %eax
        je      no_sysinfo
        cmp     $AT_SYSINFO, %eax
        je      3f
        add     $8, %edi
        jmp     2b
3:      mov     4(%edi), %eax
        mov     %eax, sysinfo

        mov     $SYS_open, %eax
        mov     $path, %ebx
        mov     $O_RDONLY, %ecx
        xor     %edx, %edx
        call    *sysinfo
        cmp     $-4095, %eax
        jae     open_failed
        mov     %eax, fd

        mov     $SYS_mmap2, %eax
        xor     %ebx, %ebx                      /* addr: anywhere */
        mov     $4096, %ecx                     /* length */
        mov     $PROT_READ, %edx
        mov     $MAP_PRIVATE, %esi
        mov     fd, %edi
        mov     $1, %ebp                        /* pgoffset, in pages: the 6th argument */
        call    *sysinfo
        xor     %ebp, %ebp
        cmp     $-4095, %eax
        jae     mmap_failed
        mov     %eax, mapped

        mov     $SYS_pread64, %eax
        mov     fd, %ebx
        mov     $buffer, %ecx
        mov     $COMPARED, %edx
        mov     $4096, %esi                     /* offset, low 32 bits */
        xor     %edi, %edi                      /* offset, high 32 bits */
        call    *sysinfo
        cmp     $COMPARED, %eax
        jne     pread_failed

        mov     mapped, %esi
        mov     $buffer, %edi
        mov     $COMPARED, %ecx
        cld
        repe cmpsb
        jne     mismatch

        /* success line */
        mov     $line, %edi
        mov     $msg_head, %esi
        call    append
        mov     $msg_sysinfo, %esi
        call    append
        mov     sysinfo, %eax
        call    append_hex32
        mov     $msg_mmap2, %esi
        call    append
        mov     mapped, %eax
        call    append_hex32
        mov     $msg_bytes, %esi
        call    append
        mov     mapped, %esi
        call    append_bytes8
        mov     $msg_match, %esi
        call    append
        xor     %ebx, %ebx
        jmp     finish

no_sysinfo:
        mov     $msg_no_sysinfo, %esi
        jmp     fail_plain                      /* without AT_SYSINFO: INT $0x80 below */
open_failed:
        mov     $msg_open, %esi
        jmp     fail_code
mmap_failed:
        mov     $msg_mmap, %esi
        jmp     fail_code
pread_failed:
        mov     $msg_pread, %esi
        jmp     fail_code
mismatch:
        mov     $line, %edi
        mov     $msg_head, %esi
        call    append
        mov     $msg_mismatch, %esi
        call    append
        mov     mapped, %esi
        call    append_bytes8
        mov     $msg_file, %esi
        call    append
        mov     $buffer, %esi
        call    append_bytes8
        jmp     fail_end

fail_code:                                      /* esi: what failed; eax: its result */
        push    %eax
        mov     $line, %edi
        push    %esi
        mov     $msg_head, %esi
        call    append
        pop     %esi
        call    append
        mov     $msg_ret, %esi
        call    append
        pop     %eax
        call    append_hex32
        jmp     fail_end
fail_plain:
        mov     $line, %edi
        push    %esi
        mov     $msg_head, %esi
        call    append
        pop     %esi
        call    append
fail_end:
        mov     $1, %ebx

finish:                                         /* ebx: exit status; edi: end of the line */
        movb    $'\n', (%edi)
        inc     %edi
        push    %ebx
        mov     %edi, %edx
        sub     $line, %edx
        mov     $SYS_write, %eax
        mov     $1, %ebx
        mov     $line, %ecx
        call    syscall
        pop     %ebx
        mov     $SYS_exit_group, %eax
        call    syscall
        hlt                                     /* not reached */

/* a system call through AT_SYSINFO, or INT $0x80 when the kernel gave none */
syscall:
        cmpl    $0, sysinfo
        je      1f
        jmp     *sysinfo
1:      int     $0x80
        ret

/* append the NUL-terminated string at esi to edi */
append:
        lodsb
        test    %al, %al
        jz      1f
        stosb
        jmp     append
1:      ret

/* append "0x" and eax as 8 hex digits */
append_hex32:
        movw    $0x7830, (%edi)                 /* "0x" */
        add     $2, %edi
        mov     $8, %ecx
1:      rol     $4, %eax
        push    %eax
        and     $15, %eax
        movb    hexdigits(%eax), %al
        stosb
        pop     %eax
        loop    1b
        ret

/* append the 8 bytes at esi as 16 hex digits */
append_bytes8:
        mov     $8, %ecx
1:      lodsb
        mov     %al, %ah
        shr     $4, %al
        movzbl  %al, %edx
        movb    hexdigits(%edx), %al
        stosb
        mov     %ah, %al
        and     $15, %al
        movzbl  %al, %edx
        movb    hexdigits(%edx), %al
        stosb
        loop    1b
        ret

        .section .rodata
path:           .asciz "/bin/busybox"
hexdigits:      .ascii "0123456789abcdef"
msg_head:       .asciz "vdso6: "
msg_sysinfo:    .asciz "sysinfo="
msg_mmap2:      .asciz " mmap2="
msg_bytes:      .asciz " bytes="
msg_match:      .asciz " match"
msg_no_sysinfo: .asciz "FAIL no AT_SYSINFO in the auxiliary vector"
msg_open:       .asciz "FAIL open /bin/busybox"
msg_mmap:       .asciz "FAIL mmap2"
msg_pread:      .asciz "FAIL pread64"
msg_ret:        .asciz " returned "
msg_mismatch:   .asciz "FAIL mismatch: mapped "
msg_file:       .asciz " file "

        .section .note.GNU-stack, "", @progbits   /* a non-executable stack, as gcc marks it */

        .bss
        .balign 4
sysinfo:        .long 0
fd:             .long 0
mapped:         .long 0
buffer:         .space COMPARED
line:           .space 256
