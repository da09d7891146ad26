// SPDX-License-Identifier: GPL-2.0
/*
 * halblk0: the disk dbgvm's --disk gives a VM, as a blk-mq block device over the HAL
 * block channel (docs/hal.md, channel 2).
 *
 * The HAL performs a packet synchronously inside the vmcall, so there is no interrupt and
 * no completion queue: queue_rq carries a request out and ends it before returning. A
 * packet is a header and its payload contiguous in guest-physical memory, so data goes
 * through one kmalloc'd (lowmem, physically contiguous) bounce buffer of the largest
 * packet; a request longer than 127 sectors is carried out as several packets.
 */
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/bvec.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/spinlock.h>

#include "dbgvm_hal.h"

#define HALBLK_NAME		"halblk"
#define HALBLK_SECTOR		512
#define HALBLK_MAX_COUNT	127	/* sectors per READ/WRITE: the payload fits 64 KiB */
#define HALBLK_REQ_SIZE		8	/* u32 sector, u32 count before the data */
#define HALBLK_BUF_DATA		(HALBLK_MAX_COUNT * HALBLK_SECTOR)
#define HALBLK_MINORS		16
/* A whole number of packets per request: fewer, fuller packets than the default 255. */
#define HALBLK_MAX_SECTORS	(8 * HALBLK_MAX_COUNT)

struct halblk_info {
	__le32 sectors;
	__le32 sector_size;
	__le32 flags;
} __packed;

struct halblk_rw {
	__le32 sector;
	__le32 count;
	u8 data[];
} __packed;

struct halblk {
	int major;
	struct blk_mq_tag_set tag_set;
	struct gendisk *disk;
	/* the one packet buffer; queue_rq runs in process or softirq context, never hardirq */
	spinlock_t lock;
	struct hal_pkt *pkt;
};

static struct halblk halblk;

/* Send the packet buffer as `op` with `length` payload bytes; the HAL status. */
static s32 halblk_submit(u16 op, u32 length)
{
	struct hal_pkt *pkt = halblk.pkt;

	pkt->channel = HAL_CH_BLOCK;
	pkt->op = op;
	pkt->length = length;
	pkt->seq = 0;
	pkt->status = HAL_PENDING;
	return hal_submit(pkt);
}

static blk_status_t halblk_fail(const char *what, sector_t sector, u32 count, s32 status)
{
	pr_err_ratelimited(HALBLK_NAME "0: %s of %u sectors at %llu failed: HAL status %d\n",
			   what, count, (unsigned long long)sector, status);
	return BLK_STS_IOERR;
}

/* One READ or WRITE packet of `count` sectors at `sector`, data in the buffer. */
static blk_status_t halblk_transfer(bool write, sector_t sector, u32 count)
{
	struct halblk_rw *rw = (struct halblk_rw *)halblk.pkt->payload;
	s32 status;

	rw->sector = cpu_to_le32(sector);
	rw->count = cpu_to_le32(count);
	status = halblk_submit(write ? HAL_BLOCK_WRITE : HAL_BLOCK_READ,
			       HALBLK_REQ_SIZE + count * HALBLK_SECTOR);
	if (status != HAL_OK)
		return halblk_fail(write ? "write" : "read", sector, count, status);
	return BLK_STS_OK;
}

/*
 * Copy the request's segments to or from the buffer, one packet's worth at a time.
 * rq_for_each_segment gives single-page segments, which is what memcpy_{to,from}_bvec
 * (kmap_local_page, for highmem pages) need.
 */
static blk_status_t halblk_rw(struct request *rq)
{
	u8 *buf = ((struct halblk_rw *)halblk.pkt->payload)->data;
	bool write = rq_data_dir(rq) == WRITE;
	sector_t sector = blk_rq_pos(rq);
	u32 left = blk_rq_sectors(rq);	/* sectors not yet read, or not yet written */
	u32 filled = 0;			/* bytes of the buffer in use */
	u32 bytes = 0;			/* bytes in the buffer (read) or its room (write) */
	struct req_iterator iter;
	struct bio_vec bv;
	blk_status_t err;

	rq_for_each_segment(bv, rq, iter) {
		u32 done = 0;

		while (done < bv.bv_len) {
			struct bio_vec piece = bv;
			u32 count;

			if (filled == bytes) {
				count = min_t(u32, left, HALBLK_MAX_COUNT);
				bytes = count * HALBLK_SECTOR;
				filled = 0;
				if (!write) {
					err = halblk_transfer(false, sector, count);
					if (err)
						return err;
					sector += count;
					left -= count;
				}
			}
			piece.bv_offset += done;
			piece.bv_len = min(bv.bv_len - done, bytes - filled);
			if (write)
				memcpy_from_bvec(buf + filled, &piece);
			else
				memcpy_to_bvec(&piece, buf + filled);
			filled += piece.bv_len;
			done += piece.bv_len;
			if (write && filled == bytes) {
				count = bytes / HALBLK_SECTOR;
				err = halblk_transfer(true, sector, count);
				if (err)
					return err;
				sector += count;
				left -= count;
			}
		}
	}
	return BLK_STS_OK;
}

static blk_status_t halblk_flush(void)
{
	s32 status = halblk_submit(HAL_BLOCK_FLUSH, 0);

	return status == HAL_OK ? BLK_STS_OK : halblk_fail("flush", 0, 0, status);
}

static blk_status_t halblk_queue_rq(struct blk_mq_hw_ctx *hctx,
				    const struct blk_mq_queue_data *bd)
{
	struct request *rq = bd->rq;
	blk_status_t status;

	blk_mq_start_request(rq);
	spin_lock_bh(&halblk.lock);
	switch (req_op(rq)) {
	case REQ_OP_READ:
	case REQ_OP_WRITE:
		status = halblk_rw(rq);
		break;
	case REQ_OP_FLUSH:
		status = halblk_flush();
		break;
	default:
		status = BLK_STS_NOTSUPP;
	}
	spin_unlock_bh(&halblk.lock);
	blk_mq_end_request(rq, status);
	return BLK_STS_OK;
}

static const struct blk_mq_ops halblk_mq_ops = {
	.queue_rq = halblk_queue_rq,
};

static const struct block_device_operations halblk_fops = {
	.owner = THIS_MODULE,
};

/* The disk's size in sectors from INFO; -ENODEV when this VM has no disk. */
static int halblk_info(sector_t *sectors, bool *persistent)
{
	struct halblk_info *info = (struct halblk_info *)halblk.pkt->payload;
	struct hal_probe_result hal;
	s32 status;

	if (hal_probe(&hal))
		return -ENODEV;
	status = halblk_submit(HAL_BLOCK_INFO, sizeof(*info));
	if (status == HAL_NOCHAN)
		return -ENODEV;
	if (status != HAL_OK || le32_to_cpu(info->sector_size) != HALBLK_SECTOR) {
		pr_err(HALBLK_NAME ": HAL block INFO failed: status %d\n", status);
		return -EIO;
	}
	*sectors = le32_to_cpu(info->sectors);
	*persistent = le32_to_cpu(info->flags) & 1;
	return 0;
}

static int halblk_add_disk(sector_t sectors)
{
	struct gendisk *disk;
	int err;

	err = blk_mq_alloc_sq_tag_set(&halblk.tag_set, &halblk_mq_ops, 16,
				      BLK_MQ_F_SHOULD_MERGE);
	if (err)
		return err;
	disk = blk_mq_alloc_disk(&halblk.tag_set, NULL);
	if (IS_ERR(disk)) {
		err = PTR_ERR(disk);
		goto free_tags;
	}
	disk->major = halblk.major;
	disk->first_minor = 0;
	disk->minors = HALBLK_MINORS;
	disk->fops = &halblk_fops;
	snprintf(disk->disk_name, DISK_NAME_LEN, HALBLK_NAME "0");
	set_capacity(disk, sectors);
	blk_queue_max_hw_sectors(disk->queue, HALBLK_MAX_SECTORS);
	/* writes reach the host's page cache; FLUSH makes a writable image durable */
	blk_queue_write_cache(disk->queue, true, false);
	blk_queue_flag_set(QUEUE_FLAG_NONROT, disk->queue);
	halblk.disk = disk;
	err = add_disk(disk);
	if (err)
		goto put_disk;
	return 0;

put_disk:
	put_disk(disk);
free_tags:
	blk_mq_free_tag_set(&halblk.tag_set);
	return err;
}

static int __init halblk_init(void)
{
	sector_t sectors;
	bool persistent;
	int err;

	halblk.pkt = kmalloc(sizeof(*halblk.pkt) + HALBLK_REQ_SIZE + HALBLK_BUF_DATA,
			     GFP_KERNEL);
	if (!halblk.pkt)
		return -ENOMEM;
	spin_lock_init(&halblk.lock);
	err = halblk_info(&sectors, &persistent);
	if (err)
		goto free_pkt;
	halblk.major = register_blkdev(0, HALBLK_NAME);
	if (halblk.major < 0) {
		err = halblk.major;
		goto free_pkt;
	}
	err = halblk_add_disk(sectors);
	if (err)
		goto unregister;
	pr_info(HALBLK_NAME "0: %llu sectors (%llu MiB), %s\n", (unsigned long long)sectors,
		(unsigned long long)sectors >> 11,
		persistent ? "writes reach the image" : "copy-on-write");
	return 0;

unregister:
	unregister_blkdev(halblk.major, HALBLK_NAME);
free_pkt:
	kfree(halblk.pkt);
	return err;
}

static void __exit halblk_exit(void)
{
	del_gendisk(halblk.disk);
	put_disk(halblk.disk);
	blk_mq_free_tag_set(&halblk.tag_set);
	unregister_blkdev(halblk.major, HALBLK_NAME);
	kfree(halblk.pkt);
}

module_init(halblk_init);
module_exit(halblk_exit);
MODULE_DESCRIPTION("dbgvm HAL block device");
MODULE_LICENSE("GPL");
