# A HAL client that misbehaves on purpose (docs/hal.md): a packet outside RAM, an oversize
# length, a payload running off the end of RAM, an unknown channel, op and hypercall, frames
# with a forged source MAC and a forged ARP sender address, an rx buffer too small, too many
# rx buffers (after one good exchange). It prints EAX (and the packet's status field) after each call, then does one
# good exchange: a broadcast frame to the other VM, received through a posted buffer, and
# powers off through the HAL with status 0. Paging off, interrupts off (it polls).
        .include "common.inc"
        .set SUBMIT, 1
        .set POST_RX, 2
        .set RAM_END, 64 << 20

        # hal FUNCTION, PACKET, LABEL: vmcall, print "LABEL eax"
        .macro hal fn, packet, label
        mov $\fn, %eax
        mov $\packet, %ebx
        vmcall
        puts \label
        call print_hex
        .endm

        # header PACKET, CHANNEL, OP, LENGTH
        .macro header packet, channel, op, length
        movw $\channel, \packet
        movw $\op, \packet + 2
        movl $\length, \packet + 4
        movl $0, \packet + 8
        movl $0x55555555, \packet + 12
        .endm

        .macro status packet        # print " status=" and the packet's status field
        puts s_status
        mov \packet + 12, %eax
        call print_hex
        call newline
        .endm

        .text
        .globl _start
_start:
        mov $stack_top, %esp
        xor %eax, %eax                          # PROBE
        vmcall
        puts s_probe
        mov %ebx, %eax
        call print_hex
        call newline

        hal SUBMIT, 0x7FFFF000, s_badaddr       # header outside RAM
        call newline

        header pkt, 1, 1, 0x10001               # console WRITE, length > MAX_PAYLOAD
        hal SUBMIT, pkt, s_oversize
        status pkt

        header (RAM_END - 16), 1, 1, 64         # payload runs off the end of RAM
        hal SUBMIT, (RAM_END - 16), s_tail
        status (RAM_END - 16)

        header pkt, 9, 1, 0                     # no channel 9
        hal SUBMIT, pkt, s_nochan
        status pkt

        header pkt, 1, 9, 0                     # no console op 9
        hal SUBMIT, pkt, s_noop
        status pkt

        hal 7, pkt, s_badcall                   # no hypercall 7
        call newline

        header info, 3, 1, 16                   # net INFO: our MAC and IP
        hal SUBMIT, info, s_info
        status info

        # an ARP request whose Ethernet source is someone else's MAC
        call build_arp
        movl $0x00000002, frame + 6             # 02:00:00:00:00:01
        movw $0x0100, frame + 10
        header frame_hdr, 3, 2, 42
        hal SUBMIT, frame_hdr, s_forgedmac
        status frame_hdr

        # the right MAC, but the ARP sender address is not ours
        call build_arp
        movb $99, frame + 14 + 17               # sender IP 10.0.2.99
        header frame_hdr, 3, 2, 42
        hal SUBMIT, frame_hdr, s_forgedip
        status frame_hdr

        header rx, 3, 3, 100                    # net rx buffer below 1514 bytes
        hal POST_RX, rx, s_smallrx
        status rx

        # the good exchange: post a buffer, broadcast a frame, wait for the other VM's
        header rx, 3, 3, 1514
        hal POST_RX, rx, s_post
        status rx
        mov $300000, %ecx                       # the other VM posts its buffer meanwhile
5:      loop 5b
        movl $0xFFFFFFFF, frame                 # broadcast destination
        movw $0xFFFF, frame + 4
        mov info + 16, %eax                     # our MAC as the source
        mov %eax, frame + 6
        movw info + 20, %ax
        movw %ax, frame + 10
        movw $0xB588, frame + 12                # EtherType 0x88B5 (local experimental)
        movl $0x6c6c6568, frame + 14            # "hell"
        header frame_hdr, 3, 2, 60
        hal SUBMIT, frame_hdr, s_send
        status frame_hdr
        mov $200000000, %ecx
2:      cmpl $1, rx + 12
        jne 3f
        pause
        loop 2b
        puts s_timeout
        call newline
        jmp poweroff
3:      puts s_rx
        movzbl rx + 16 + 11, %eax               # last byte of the frame's source MAC
        call print_hex
        status rx
        mov $33, %ecx                           # 33 net rx buffers: the last is FULL
        mov $nbufs, %edx
1:      movw $3, (%edx)
        movw $0, 2(%edx)
        movl $1514, 4(%edx)
        mov $POST_RX, %eax
        mov %edx, %ebx
        vmcall
        add $1536, %edx
        loop 1b
        puts s_full
        call print_hex
        call newline
        mov $3000000, %ecx                      # let the other VM take our frame too
4:      loop 4b
poweroff:
        header pkt, 0, 1, 4                     # system POWEROFF, status 0
        movl $0, pkt + 16
        hal SUBMIT, pkt, s_poweroff             # not reached: the run ends in the call
        exit_with 1

build_arp:                                      # frame = ARP who-has 10.0.2.200 from us
        movl $0xFFFFFFFF, frame
        movw $0xFFFF, frame + 4
        mov info + 16, %eax
        mov %eax, frame + 6
        movw info + 20, %ax
        movw %ax, frame + 10
        movw $0x0608, frame + 12                # ARP
        movl $0x00080100, frame + 14            # htype 1, ptype 0x0800
        movl $0x01000406, frame + 18            # hlen 6, plen 4, op 1
        mov info + 16, %eax                     # sender MAC
        mov %eax, frame + 22
        movw info + 20, %ax
        movw %ax, frame + 26
        mov info + 24, %eax                     # sender IP
        mov %eax, frame + 28
        movl $0, frame + 32                     # target MAC
        movw $0, frame + 36
        movl $0xC802000A, frame + 38            # target IP 10.0.2.200
        ret

        .data
s_probe:    .asciz "probe "
s_badaddr:  .asciz "badaddr "
s_oversize: .asciz "oversize "
s_tail:     .asciz "tail "
s_nochan:   .asciz "nochan "
s_noop:     .asciz "noop "
s_badcall:  .asciz "badcall "
s_info:     .asciz "info "
s_forgedmac: .asciz "forgedmac "
s_forgedip: .asciz "forgedip "
s_smallrx:  .asciz "smallrx "
s_full:     .asciz "full "
s_post:     .asciz "post "
s_send:     .asciz "send "
s_rx:       .asciz "rx "
s_timeout:  .asciz "timeout"
s_poweroff: .asciz "poweroff "
s_status:   .asciz " status="

        .bss
        .align 16
pkt:        .fill 16 + 64, 1, 0
info:       .fill 16 + 16, 1, 0
frame_hdr:  .fill 16, 1, 0
frame:      .fill 1514, 1, 0
        .align 16
rx:         .fill 16 + 1514, 1, 0
        .align 16
nbufs:      .fill 33 * 1536, 1, 0
