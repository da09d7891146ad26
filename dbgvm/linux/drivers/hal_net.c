// SPDX-License-Identifier: GPL-2.0
/*
 * hal_net: an Ethernet interface over the dbgvm HAL net channel (docs/hal.md, section 5).
 *
 * The host is a switch port, not a NIC: a transmitted frame is one synchronous SUBMIT of
 * a copy of the skb, and received frames land in receive buffers posted with POST_RX,
 * announced by the shared HAL interrupt. The interrupt handler only schedules NAPI; the
 * poll consumes filled buffers in posting order (the order the host fills them) and posts
 * each one again at once.
 *
 * The ABI has no way to take a posted buffer back, so the buffers live as long as the
 * kernel does and the module cannot be unloaded (it has no exit function).
 *
 * The IPv4 address and netmask the host assigned are shown as the read-only attribute
 * /sys/class/net/<if>/hal_ipv4 ("10.0.2.15/24"), which `ip addr add` takes as it is.
 */
#include <linux/etherdevice.h>
#include <linux/inetdevice.h>
#include <linux/interrupt.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/slab.h>

#include "dbgvm_hal.h"

#define HAL_NET_RX_BUFFERS	HAL_MAX_POSTED
#define HAL_NET_FRAME_MAX	(ETH_FRAME_LEN)		/* 1514: no FCS */
#define HAL_NET_INFO_LEN	16

struct hal_net {
	struct net_device *dev;
	struct napi_struct napi;
	unsigned int irq;
	__be32 addr;
	__be32 mask;
	struct hal_pkt *tx;			/* serialised by the queue's xmit lock */
	struct hal_pkt *rx[HAL_NET_RX_BUFFERS];
	unsigned int rx_next;			/* the oldest posted buffer */
};

static struct hal_pkt *hal_net_alloc_pkt(void)
{
	/* kmalloc memory is lowmem and physically contiguous: virt_to_phys is valid */
	return kzalloc(sizeof(struct hal_pkt) + HAL_NET_FRAME_MAX, GFP_KERNEL);
}

static s32 hal_net_post(struct hal_pkt *pkt)
{
	pkt->channel = HAL_CH_NET;
	pkt->op = HAL_NET_FRAME;
	pkt->length = HAL_NET_FRAME_MAX;
	pkt->seq = 0;
	return hal_post_rx(pkt);
}

static bool hal_net_rx_ready(struct hal_net *hn)
{
	return READ_ONCE(hn->rx[hn->rx_next]->status) != HAL_PENDING;
}

/* Consume the oldest posted buffer (filled, or refused when it was posted) and post it
 * again; the skb when it held a frame. */
static struct sk_buff *hal_net_take(struct hal_net *hn, bool deliver)
{
	struct hal_pkt *pkt = hn->rx[hn->rx_next];
	struct net_device *dev = hn->dev;
	struct sk_buff *skb = NULL;
	u32 len;

	rmb();	/* the status is written last: read the rest after it */
	len = pkt->length;
	if (pkt->status != HAL_OK || pkt->op != HAL_NET_FRAME || len < ETH_HLEN ||
	    len > HAL_NET_FRAME_MAX) {
		dev->stats.rx_errors++;
	} else if (deliver) {
		skb = napi_alloc_skb(&hn->napi, len);
		if (skb) {
			skb_put_data(skb, pkt->payload, len);
			skb->protocol = eth_type_trans(skb, dev);
			dev->stats.rx_packets++;
			dev->stats.rx_bytes += len;
		} else {
			dev->stats.rx_dropped++;
		}
	}
	if (hal_net_post(pkt) != HAL_OK)
		dev->stats.rx_errors++;
	hn->rx_next = (hn->rx_next + 1) % HAL_NET_RX_BUFFERS;
	return skb;
}

static int hal_net_poll(struct napi_struct *napi, int budget)
{
	struct hal_net *hn = container_of(napi, struct hal_net, napi);
	struct sk_buff *skb;
	int done = 0;

	while (done < budget && hal_net_rx_ready(hn)) {
		skb = hal_net_take(hn, true);
		if (skb)
			napi_gro_receive(napi, skb);
		done++;
	}
	if (done < budget)
		napi_complete_done(napi, done);
	return done;
}

/* The line is shared with hal_console and hal_blk: claim it only for our own buffers. */
static irqreturn_t hal_net_interrupt(int irq, void *data)
{
	struct hal_net *hn = data;

	if (!hal_net_rx_ready(hn))
		return IRQ_NONE;
	napi_schedule(&hn->napi);
	return IRQ_HANDLED;
}

static int hal_net_open(struct net_device *dev)
{
	struct hal_net *hn = netdev_priv(dev);
	int err, i;

	/* frames that arrived while the interface was down are stale: drop them */
	for (i = 0; i < HAL_NET_RX_BUFFERS && hal_net_rx_ready(hn); i++)
		hal_net_take(hn, false);
	err = request_irq(hn->irq, hal_net_interrupt, IRQF_SHARED, dev->name, hn);
	if (err)
		return err;
	napi_enable(&hn->napi);
	napi_schedule(&hn->napi);	/* anything that came in before the handler was there */
	netif_start_queue(dev);
	return 0;
}

static int hal_net_stop(struct net_device *dev)
{
	struct hal_net *hn = netdev_priv(dev);

	netif_stop_queue(dev);
	napi_disable(&hn->napi);
	free_irq(hn->irq, hn);
	return 0;
}

static netdev_tx_t hal_net_start_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct hal_net *hn = netdev_priv(dev);
	struct hal_pkt *pkt = hn->tx;
	s32 status;

	if (skb->len < ETH_HLEN || skb->len > HAL_NET_FRAME_MAX) {
		dev->stats.tx_errors++;
		goto out;
	}
	pkt->channel = HAL_CH_NET;
	pkt->op = HAL_NET_SEND;
	pkt->length = skb->len;
	skb_copy_bits(skb, 0, pkt->payload, skb->len);
	status = hal_submit(pkt);
	if (status == HAL_OK) {
		dev->stats.tx_packets++;
		dev->stats.tx_bytes += skb->len;
	} else if (status == HAL_FORGED) {
		/* the switch refuses a source MAC or address that is not this port's */
		dev->stats.tx_dropped++;
	} else {
		dev->stats.tx_errors++;
	}
out:
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

static const struct net_device_ops hal_net_ops = {
	.ndo_open		= hal_net_open,
	.ndo_stop		= hal_net_stop,
	.ndo_start_xmit		= hal_net_start_xmit,
	.ndo_set_mac_address	= eth_mac_addr,
	.ndo_validate_addr	= eth_validate_addr,
};

static ssize_t hal_ipv4_show(struct device *d, struct device_attribute *attr, char *buf)
{
	struct hal_net *hn = netdev_priv(to_net_dev(d));

	return sysfs_emit(buf, "%pI4/%d\n", &hn->addr, inet_mask_len(hn->mask));
}
static DEVICE_ATTR_RO(hal_ipv4);

static struct attribute *hal_net_attrs[] = {
	&dev_attr_hal_ipv4.attr,
	NULL,
};

static const struct attribute_group hal_net_group = {
	.attrs = hal_net_attrs,
};

/* INFO: the MAC, IPv4 address and netmask the host gave this port. */
static int hal_net_info(struct net_device *dev, struct hal_net *hn)
{
	struct hal_pkt *pkt = hn->tx;
	s32 status;

	pkt->channel = HAL_CH_NET;
	pkt->op = HAL_NET_INFO;
	pkt->length = HAL_NET_INFO_LEN;
	status = hal_submit(pkt);
	if (status == HAL_NOCHAN)
		return -ENODEV;
	if (status != HAL_OK || pkt->length < HAL_NET_INFO_LEN)
		return -EIO;
	eth_hw_addr_set(dev, pkt->payload);
	memcpy(&hn->addr, pkt->payload + 8, 4);
	memcpy(&hn->mask, pkt->payload + 12, 4);
	return 0;
}

static int hal_net_alloc_rx(struct hal_net *hn)
{
	int i;

	for (i = 0; i < HAL_NET_RX_BUFFERS; i++) {
		hn->rx[i] = hal_net_alloc_pkt();
		if (!hn->rx[i])
			goto fail;
	}
	return 0;
fail:
	while (i--)
		kfree(hn->rx[i]);
	return -ENOMEM;
}

static int __init hal_net_init(void)
{
	struct hal_probe_result probe;
	struct net_device *dev;
	struct hal_net *hn;
	int err, i;

	err = hal_probe(&probe);
	if (err)
		return err;
	dev = alloc_etherdev(sizeof(*hn));
	if (!dev)
		return -ENOMEM;
	hn = netdev_priv(dev);
	hn->dev = dev;
	hn->irq = probe.irq;
	hn->tx = hal_net_alloc_pkt();
	if (!hn->tx) {
		err = -ENOMEM;
		goto free_dev;
	}
	err = hal_net_info(dev, hn);
	if (err)
		goto free_tx;
	err = hal_net_alloc_rx(hn);
	if (err)
		goto free_tx;
	dev->netdev_ops = &hal_net_ops;
	dev->priv_flags |= IFF_LIVE_ADDR_CHANGE;
	dev->sysfs_groups[0] = &hal_net_group;
	netif_napi_add(dev, &hn->napi, hal_net_poll);
	/* from here on a failure leaks: the host may hold the buffers, and may fill them */
	for (i = 0; i < HAL_NET_RX_BUFFERS; i++) {
		if (hal_net_post(hn->rx[i]) != HAL_OK)
			return -EIO;
	}
	err = register_netdev(dev);
	if (err)
		return err;
	netdev_info(dev, "dbgvm HAL net, MAC %pM, IPv4 %pI4/%d, IRQ %u\n", dev->dev_addr,
		    &hn->addr, inet_mask_len(hn->mask), hn->irq);
	return 0;
free_tx:
	kfree(hn->tx);
free_dev:
	free_netdev(dev);
	return err;
}
module_init(hal_net_init);

MODULE_DESCRIPTION("Ethernet over the dbgvm HAL net channel");
MODULE_LICENSE("GPL");
