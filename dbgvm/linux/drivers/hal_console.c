// SPDX-License-Identifier: GPL-2.0
/*
 * hal_console: hvc0 on dbgvm's HAL console channel (docs/hal.md, channel 1).
 *
 * Output is one SUBMIT of a console WRITE packet per hvc put_chars call; input arrives in
 * receive buffers posted with POST_RX and announced by the HAL interrupt, which kicks the
 * hvc thread so that typed bytes do not wait for its polling. With console=hvc0 the kernel's
 * log (replayed: CON_PRINTBUFFER) and the shell are on the HAL console alone.
 *
 * The module cannot be unloaded: the host keeps the posted receive buffers and would write
 * into them after they were freed.
 */
#include <linux/interrupt.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/tty.h>

#include "dbgvm_hal.h"

/*
 * drivers/tty/hvc/hvc_console.h of Linux 6.1, which Debian's header packages do not carry
 * (the hvc core is built in: CONFIG_HVC_DRIVER=y, its functions exported GPL).
 */
struct hvc_struct;

struct hv_ops {
	int (*get_chars)(uint32_t vtermno, char *buf, int count);
	int (*put_chars)(uint32_t vtermno, const char *buf, int count);
	int (*flush)(uint32_t vtermno, bool wait);
	int (*notifier_add)(struct hvc_struct *hp, int irq);
	void (*notifier_del)(struct hvc_struct *hp, int irq);
	void (*notifier_hangup)(struct hvc_struct *hp, int irq);
	int (*tiocmget)(struct hvc_struct *hp);
	int (*tiocmset)(struct hvc_struct *hp, unsigned int set, unsigned int clear);
	void (*dtr_rts)(struct hvc_struct *hp, int raise);
};

int hvc_instantiate(uint32_t vtermno, int index, const struct hv_ops *ops);
struct hvc_struct *hvc_alloc(uint32_t vtermno, int data, const struct hv_ops *ops,
			     int outbuf_size);
void hvc_kick(void);

#define HAL_CONSOLE_VTERM	0	/* hvc0 */
#define HAL_CONSOLE_MAX_WRITE	4096	/* bytes per WRITE packet (docs/hal.md) */
#define RX_BUFFERS		4
#define RX_SIZE			256

struct hal_console {
	spinlock_t tx_lock;		/* the one transmit packet */
	struct hal_pkt *tx;
	spinlock_t rx_lock;
	struct hal_pkt *rx[RX_BUFFERS];	/* posted in this order, filled in this order */
	unsigned int rx_next;		/* the buffer filled next */
	unsigned int rx_used;		/* bytes of it already handed to the tty */
	bool posted;			/* the buffers went to the host (first open of hvc0) */
	bool eof;			/* the host's input ended */
	struct hvc_struct *hvc;
	int irq;
};

static struct hal_console cons;

static int hal_console_put_chars(uint32_t vtermno, const char *buf, int count)
{
	unsigned long flags;
	int len = min(count, HAL_CONSOLE_MAX_WRITE);

	spin_lock_irqsave(&cons.tx_lock, flags);
	cons.tx->channel = HAL_CH_CONSOLE;
	cons.tx->op = HAL_CONSOLE_WRITE;
	cons.tx->length = len;
	cons.tx->seq = 0;
	memcpy(cons.tx->payload, buf, len);
	hal_submit(cons.tx);
	spin_unlock_irqrestore(&cons.tx_lock, flags);
	/* a refused write is lost, as on a line with nobody listening: never retried */
	return len;
}

static void hal_console_repost(struct hal_pkt *pkt)
{
	pkt->channel = HAL_CH_CONSOLE;
	pkt->op = 0;
	pkt->length = RX_SIZE;
	pkt->seq = 0;
	pkt->status = HAL_PENDING;
	if (hal_post_rx(pkt) != HAL_OK)
		pr_warn_ratelimited("hal_console: the host refused a receive buffer\n");
}

/* Bytes from the filled buffers, oldest first; each buffer is posted again when empty. */
static int hal_console_get_chars(uint32_t vtermno, char *buf, int count)
{
	unsigned long flags;
	int got = 0;

	spin_lock_irqsave(&cons.rx_lock, flags);
	while (cons.posted && !cons.eof && got < count) {
		struct hal_pkt *pkt = cons.rx[cons.rx_next];
		int take;

		if (READ_ONCE(pkt->status) == HAL_PENDING)
			break;
		if (pkt->status == HAL_OK && pkt->op == HAL_CONSOLE_EOF) {
			/* nothing will come: the buffer stays with us, none is reposted */
			cons.eof = true;
			break;
		}
		if (pkt->status == HAL_OK && pkt->op == HAL_CONSOLE_INPUT) {
			take = min_t(int, count - got, pkt->length - cons.rx_used);
			memcpy(buf + got, pkt->payload + cons.rx_used, take);
			got += take;
			cons.rx_used += take;
			if (cons.rx_used < pkt->length)
				break;
		}
		cons.rx_used = 0;
		hal_console_repost(pkt);
		cons.rx_next = (cons.rx_next + 1) % RX_BUFFERS;
	}
	spin_unlock_irqrestore(&cons.rx_lock, flags);
	return got;
}

/* hvc0 opened: from now on input goes to the HAL console (the host routes typed bytes
 * to the UART until a console buffer was posted). */
static int hal_console_notifier_add(struct hvc_struct *hp, int irq)
{
	unsigned long flags;
	int i;

	spin_lock_irqsave(&cons.rx_lock, flags);
	if (!cons.posted) {
		for (i = 0; i < RX_BUFFERS; i++)
			hal_console_repost(cons.rx[i]);
		cons.posted = true;
	}
	spin_unlock_irqrestore(&cons.rx_lock, flags);
	return 0;
}

static void hal_console_notifier_del(struct hvc_struct *hp, int irq)
{
}

static const struct hv_ops hal_console_ops = {
	.get_chars = hal_console_get_chars,
	.put_chars = hal_console_put_chars,
	.notifier_add = hal_console_notifier_add,
	.notifier_del = hal_console_notifier_del,
};

/* The HAL line is shared with hal_blk and hal_net: only a filled console buffer is ours. */
static irqreturn_t hal_console_interrupt(int irq, void *dev)
{
	struct hal_pkt *pkt = cons.rx[READ_ONCE(cons.rx_next)];

	if (!READ_ONCE(cons.posted) || READ_ONCE(pkt->status) == HAL_PENDING)
		return IRQ_NONE;
	hvc_kick();
	return IRQ_HANDLED;
}

static int __init hal_console_init(void)
{
	struct hal_probe_result hal;
	int i, err;

	err = hal_probe(&hal);
	if (err)
		return err;
	spin_lock_init(&cons.tx_lock);
	spin_lock_init(&cons.rx_lock);
	cons.tx = kzalloc(sizeof(*cons.tx) + HAL_CONSOLE_MAX_WRITE, GFP_KERNEL);
	if (!cons.tx)
		return -ENOMEM;
	for (i = 0; i < RX_BUFFERS; i++) {
		cons.rx[i] = kzalloc(sizeof(*cons.rx[i]) + RX_SIZE, GFP_KERNEL);
		if (!cons.rx[i]) {
			err = -ENOMEM;
			goto free;
		}
	}
	cons.irq = hal.irq;
	err = request_irq(cons.irq, hal_console_interrupt, IRQF_SHARED, "hal_console", &cons);
	if (err)
		goto free;
	/* the kernel console first, so that console=hvc0 replays the log at once */
	hvc_instantiate(HAL_CONSOLE_VTERM, 0, &hal_console_ops);
	cons.hvc = hvc_alloc(HAL_CONSOLE_VTERM, cons.irq, &hal_console_ops, PAGE_SIZE);
	if (IS_ERR(cons.hvc)) {
		/* the console registered above still writes: keep everything it uses */
		pr_err("hal_console: hvc_alloc failed (%ld): no hvc0 tty\n", PTR_ERR(cons.hvc));
		return 0;
	}
	pr_info("hal_console: hvc0 on the dbgvm HAL console (ABI %u, IRQ %u)\n", hal.abi,
		hal.irq);
	return 0;
free:
	for (i = 0; i < RX_BUFFERS; i++)
		kfree(cons.rx[i]);
	kfree(cons.tx);
	return err;
}
module_init(hal_console_init);

MODULE_DESCRIPTION("hvc console on the dbgvm HAL");
MODULE_LICENSE("GPL");
