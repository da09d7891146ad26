/* HAL drivers (docs/hal.md): the hypercall, the console, the block device and the NIC. */
#include "kernel.h"

int hal_present;
uint32_t hal_irq_line = 5;
uint32_t hal_abi;

#define HAL_PROBE   0
#define HAL_SUBMIT  1
#define HAL_POST_RX 2
#define HAL_MAGIC   0x4C414844u             /* "DHAL" */

/* VMCALL (0F 01 C1). Without a HAL it raises #UD, and the #UD handler makes it return
 * BADCALL (kernel.c), so probing fails cleanly under QEMU. */
static int32_t vmcall(uint32_t fn, uint32_t *b, uint32_t *c, uint32_t *d)
{
    uint32_t a = fn;
    __asm__ volatile(".byte 0x0f, 0x01, 0xc1"
                     : "+a"(a), "+b"(*b), "+c"(*c), "+d"(*d) : : "memory");
    return (int32_t)a;
}

int hal_probe(void)
{
    uint32_t b = 0, c = 0, d = 0;
    int32_t status = vmcall(HAL_PROBE, &b, &c, &d);
    hal_present = status == HAL_OK && b == HAL_MAGIC && c == 1;
    if (hal_present) {
        hal_abi = c;
        hal_irq_line = d;
    }
    return hal_present;
}

int32_t hal_submit(void *pkt)
{
    uint32_t b = (uint32_t)pkt, c = 0, d = 0;
    return vmcall(HAL_SUBMIT, &b, &c, &d);
}

int32_t hal_post(void *pkt)
{
    uint32_t b = (uint32_t)pkt, c = 0, d = 0;
    return vmcall(HAL_POST_RX, &b, &c, &d);
}

/* Receive rings: buffers posted to the host, consumed in the host's fill order (seq). */
struct rxbuf {
    struct hal_pkt *pkt;
    uint32_t cap;
    int posted;
};

static int post(struct rxbuf *rx, uint16_t channel)
{
    rx->pkt->channel = channel;
    rx->pkt->op = 0;
    rx->pkt->length = rx->cap;
    rx->pkt->seq = 0;
    rx->pkt->status = 0;
    int32_t s = hal_post(rx->pkt);
    rx->posted = s == HAL_OK || s == HAL_PENDING;
    return rx->posted;
}

/* The filled buffer with the lowest seq, or 0. */
static struct rxbuf *next_filled(struct rxbuf *ring, int n)
{
    struct rxbuf *best = 0;
    for (int i = 0; i < n; i++) {
        struct rxbuf *rx = &ring[i];
        if (rx->posted && rx->pkt->status != HAL_PENDING && (!best || rx->pkt->seq < best->pkt->seq))
            best = rx;
    }
    return best;
}

/* ---------------- console (channel 1) ---------------- */

#define CON_RX_N 4
#define CON_RX_CAP 512
#define CON_TX_MAX 4096

static struct {
    struct hal_pkt h;
    uint8_t data[CON_RX_CAP];
} con_rx_mem[CON_RX_N] __attribute__((aligned(16)));
static struct rxbuf con_rx[CON_RX_N];
static struct {
    struct hal_pkt h;
    uint8_t data[CON_TX_MAX];
} con_tx __attribute__((aligned(16)));
static int con_hal;                         /* output through the HAL */
int console_input;
static int con_eof;

static char in_ring[8192];
static uint32_t in_head, in_tail;           /* free-running indices */
static const char *script;
static uint32_t script_len;

static uint32_t ring_used(void)
{
    return in_head - in_tail;
}

static void console_repost(void)
{
    int posted = 0;
    for (int i = 0; i < CON_RX_N; i++)
        posted += con_rx[i].posted;
    for (int i = 0; i < CON_RX_N; i++) {
        /* Never accept more than the ring can hold. */
        if (!con_rx[i].posted && ring_used() + (posted + 1) * CON_RX_CAP <= sizeof in_ring)
            posted += post(&con_rx[i], CH_CONSOLE);
    }
}

void console_init(void)
{
    if (!hal_present)
        return;
    con_hal = 1;
    for (int i = 0; i < CON_RX_N; i++) {
        con_rx[i].pkt = &con_rx_mem[i].h;
        con_rx[i].cap = CON_RX_CAP;
    }
    console_repost();
    for (int i = 0; i < CON_RX_N; i++)
        console_input |= con_rx[i].posted;
}

void console_write(const void *data, uint32_t len)
{
    const uint8_t *p = data;
    while (con_hal && len) {
        uint32_t n = len < CON_TX_MAX ? len : CON_TX_MAX;
        memcpy(con_tx.data, p, n);
        con_tx.h.channel = CH_CONSOLE;
        con_tx.h.op = 1;
        con_tx.h.length = n;
        if (hal_submit(&con_tx) != HAL_OK) {
            con_hal = 0;                    /* no console channel: debug port from now on */
            break;
        }
        p += n;
        len -= n;
    }
    while (len--)
        outb(0xE9, *p++);
}

void console_set_script(const char *text, uint32_t len)
{
    script = text;
    script_len = len;
}

static void console_interrupt(void)
{
    struct rxbuf *rx;
    while ((rx = next_filled(con_rx, CON_RX_N))) {
        struct hal_pkt *p = rx->pkt;
        if (p->status == HAL_OK && p->op == 2) {
            const uint8_t *data = (const uint8_t *)(p + 1);
            for (uint32_t i = 0; i < p->length && i < rx->cap && ring_used() < sizeof in_ring; i++)
                in_ring[in_head++ % sizeof in_ring] = data[i];
        } else if (p->status == HAL_OK && p->op == 3) {
            con_eof = 1;
        }
        rx->posted = 0;
    }
    if (!con_eof)
        console_repost();
}

/* A line from the script (script= on the command line, ';' between commands, echoed as if
 * typed), else from the console input. Returns its length without the newline, or -1 at the
 * end of input. Lines longer than cap - 1 are cut. */
int console_read_line(char *out, uint32_t cap)
{
    uint32_t n = 0;
    if (script_len) {
        while (script_len && *script != ';') {
            if (n + 1 < cap)
                out[n++] = *script;
            script++, script_len--;
        }
        if (script_len)
            script++, script_len--;
        console_write(out, n);
        console_write("\n", 1);
        out[n] = 0;
        return n;
    }
    for (;;) {
        uint32_t used = ring_used(), len = 0;
        while (len < used && in_ring[(in_tail + len) % sizeof in_ring] != '\n')
            len++;
        int complete = len < used;
        if (complete || (used && (con_eof || !console_input))) {
            for (uint32_t i = 0; i < len; i++) {
                char c = in_ring[(in_tail + i) % sizeof in_ring];
                if (n + 1 < cap)
                    out[n++] = c;
            }
            in_tail += len + complete;
            if (n && out[n - 1] == '\r')
                n--;
            out[n] = 0;
            if (!con_eof)
                console_repost();
            return n;
        }
        if (con_eof || !console_input)
            return -1;
        wait_for_interrupt();
    }
}

/* ---------------- block (channel 2) ---------------- */

int disk_present;
struct disk_info disk;
static struct {
    struct hal_pkt h;
    uint32_t sector, count;
    uint8_t data[512];
} blk __attribute__((aligned(16)));

static int32_t blk_submit(uint16_t op, uint32_t length)
{
    blk.h.channel = CH_BLOCK;
    blk.h.op = op;
    blk.h.length = length;
    blk.h.seq++;
    return hal_submit(&blk);
}

void disk_init(void)
{
    if (!hal_present || blk_submit(1, 12) != HAL_OK)
        return;
    memcpy(&disk, &blk.sector, sizeof disk);
    disk_present = 1;
}

static int blk_error(int32_t status)
{
    return status == HAL_OK ? 0 : status == HAL_NOCHAN ? -E_NODEV : -E_IO;
}

int disk_read(uint32_t sector, void *buf512)
{
    blk.sector = sector;
    blk.count = 1;
    int32_t s = blk_submit(2, 8 + 512);
    if (s == HAL_OK)
        memcpy(buf512, blk.data, 512);
    return blk_error(s);
}

int disk_write(uint32_t sector, const void *buf512)
{
    blk.sector = sector;
    blk.count = 1;
    memcpy(blk.data, buf512, 512);
    int32_t s = blk_submit(3, 8 + 512);
    if (s == HAL_OK)
        s = blk_submit(4, 0);
    return blk_error(s);
}

/* ---------------- net (channel 3) ---------------- */

#define NET_RX_N 8
#define FRAME_MAX 1514

int net_present;
struct net_info netif;
static struct {
    struct hal_pkt h;
    uint8_t data[FRAME_MAX + 2];
} net_rx_mem[NET_RX_N] __attribute__((aligned(16)));
static struct rxbuf net_rx[NET_RX_N];
static struct {
    struct hal_pkt h;
    uint8_t data[FRAME_MAX + 2];
} net_tx __attribute__((aligned(16)));

void net_init(void)
{
    if (!hal_present)
        return;
    net_tx.h.channel = CH_NET;
    net_tx.h.op = 1;
    net_tx.h.length = 16;
    if (hal_submit(&net_tx) != HAL_OK)
        return;
    memcpy(&netif, net_tx.data, sizeof netif);
    for (int i = 0; i < NET_RX_N; i++) {
        net_rx[i].pkt = &net_rx_mem[i].h;
        net_rx[i].cap = FRAME_MAX;
        post(&net_rx[i], CH_NET);
    }
    net_present = 1;
}

int net_send(const void *frame, uint32_t len)
{
    if (len > FRAME_MAX)
        return -E_INVAL;
    memcpy(net_tx.data, frame, len);
    if (len < 60) {                         /* pad to the Ethernet minimum */
        memset(net_tx.data + len, 0, 60 - len);
        len = 60;
    }
    net_tx.h.channel = CH_NET;
    net_tx.h.op = 2;
    net_tx.h.length = len;
    net_tx.h.seq++;
    return hal_submit(&net_tx) == HAL_OK ? 0 : -E_IO;
}

static void net_interrupt(void)
{
    struct rxbuf *rx;
    while ((rx = next_filled(net_rx, NET_RX_N))) {
        struct hal_pkt *p = rx->pkt;
        if (p->status == HAL_OK && p->op == 3 && p->length <= rx->cap)
            net_receive((const uint8_t *)(p + 1), p->length);
        post(rx, CH_NET);
    }
}

void hal_interrupt(void)
{
    if (console_input)
        console_interrupt();
    if (net_present)
        net_interrupt();
}
