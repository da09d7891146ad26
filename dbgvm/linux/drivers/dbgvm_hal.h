/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The dbgvm HAL as Linux modules see it (docs/hal.md is the contract): the vmcall
 * hypercall, the 16-byte packet header, channels, ops and statuses. Shared by
 * hal_console, hal_blk and hal_net.
 */
#ifndef DBGVM_HAL_H
#define DBGVM_HAL_H

#include <linux/errno.h>
#include <linux/io.h>
#include <linux/types.h>
#include <asm/asm.h>

#define HAL_MAGIC       0x4C414844u     /* "DHAL", in EBX after PROBE */
#define HAL_ABI_VERSION 1
#define HAL_MAX_PAYLOAD 65536
#define HAL_MAX_POSTED  32

enum hal_function { HAL_PROBE = 0, HAL_SUBMIT = 1, HAL_POST_RX = 2 };

enum hal_status {
	HAL_OK = 0, HAL_PENDING = 1, HAL_BADADDR = -1, HAL_BADLEN = -2, HAL_NOCHAN = -3,
	HAL_NOOP = -4, HAL_IOERR = -5, HAL_FORGED = -6, HAL_FULL = -7, HAL_BADCALL = -8,
};

enum hal_channel { HAL_CH_SYSTEM = 0, HAL_CH_CONSOLE = 1, HAL_CH_BLOCK = 2, HAL_CH_NET = 3 };

enum hal_console_op { HAL_CONSOLE_WRITE = 1, HAL_CONSOLE_INPUT = 2, HAL_CONSOLE_EOF = 3 };
enum hal_block_op { HAL_BLOCK_INFO = 1, HAL_BLOCK_READ = 2, HAL_BLOCK_WRITE = 3,
		    HAL_BLOCK_FLUSH = 4 };
enum hal_net_op { HAL_NET_INFO = 1, HAL_NET_SEND = 2, HAL_NET_FRAME = 3 };

/* A packet: this header, then `length` payload bytes, contiguous in guest-physical memory
 * (kmalloc'd memory is). The host rewrites length and status. */
struct hal_pkt {
	u16 channel;
	u16 op;
	u32 length;
	u32 seq;
	s32 status;
	u8 payload[];
} __packed;

struct hal_probe_result {
	u32 abi;        /* ECX */
	u32 irq;        /* EDX: the legacy IRQ line of the HAL interrupt */
};

/* vmcall (0F 01 C1) at virtual CPL 0; EAX = function, EBX/ECX/EDX = arguments. Only
 * after hal_probe() succeeded: outside dbgvm the instruction raises #UD. */
static inline s32 hal_vmcall(u32 fn, u32 *b, u32 *c, u32 *d)
{
	u32 a = fn;

	asm volatile(".byte 0x0f, 0x01, 0xc1"
		     : "+a"(a), "+b"(*b), "+c"(*c), "+d"(*d) : : "memory");
	return (s32)a;
}

/* 0 and the ABI version and IRQ line when dbgvm's HAL answers, -ENODEV otherwise. The
 * vmcall has an exception-table entry: where it raises #UD (QEMU, bare metal) execution
 * resumes after it with the registers unchanged, so the same initramfs boots anywhere.
 * Under a hypervisor that knows vmcall (KVM), EBX does not come back as the magic. */
static inline int hal_probe(struct hal_probe_result *out)
{
	u32 a = HAL_PROBE, b = 0, c = 0, d = 0;

	asm volatile("1: .byte 0x0f, 0x01, 0xc1\n"
		     "2:\n"
		     _ASM_EXTABLE(1b, 2b)
		     : "+a"(a), "+b"(b), "+c"(c), "+d"(d) : : "memory");
	if ((s32)a != HAL_OK || b != HAL_MAGIC || c != HAL_ABI_VERSION)
		return -ENODEV;
	out->abi = c;
	out->irq = d;
	return 0;
}

/* Perform `pkt` synchronously; its status (also written into pkt->status). */
static inline s32 hal_submit(struct hal_pkt *pkt)
{
	u32 b = (u32)virt_to_phys(pkt), c = 0, d = 0;

	return hal_vmcall(HAL_SUBMIT, &b, &c, &d);
}

/* Hand a receive buffer (header + `length` bytes of room) to the host. */
static inline s32 hal_post_rx(struct hal_pkt *pkt)
{
	u32 b = (u32)virt_to_phys(pkt), c = 0, d = 0;

	return hal_vmcall(HAL_POST_RX, &b, &c, &d);
}

#endif /* DBGVM_HAL_H */
