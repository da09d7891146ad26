/* A tiny IPv4 stack on the HAL NIC: answers ARP requests for our address and ICMP echo
 * requests (from the interrupt handler), resolves addresses and pings. */
#include "kernel.h"

#define ETH_ARP   0x0806
#define ETH_IPV4  0x0800
#define PING_ID   0x4447                    /* "DG" */
#define ARP_SLOTS 8

static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static struct {
    uint32_t ip;
    uint8_t mac[6];
} arp_cache[ARP_SLOTS];
static uint32_t arp_next;

static volatile int ping_got;
static uint32_t ping_ip, ping_rx_us, ping_ttl, ping_bytes;
static uint16_t ping_seq;

static uint16_t be16(const uint8_t *p)
{
    return (p[0] << 8) | p[1];
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v & 0xff;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint16_t checksum(const uint8_t *p, uint32_t len)
{
    uint32_t sum = 0;
    for (; len > 1; p += 2, len -= 2)
        sum += be16(p);
    if (len)
        sum += p[0] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return ~sum & 0xffff;
}

static const uint8_t *arp_lookup(uint32_t ip)
{
    for (int i = 0; i < ARP_SLOTS; i++)
        if (arp_cache[i].ip == ip && ip)
            return arp_cache[i].mac;
    return 0;
}

static void arp_learn(uint32_t ip, const uint8_t *mac)
{
    for (int i = 0; i < ARP_SLOTS; i++)
        if (arp_cache[i].ip == ip) {
            memcpy(arp_cache[i].mac, mac, 6);
            return;
        }
    arp_cache[arp_next].ip = ip;
    memcpy(arp_cache[arp_next].mac, mac, 6);
    arp_next = (arp_next + 1) % ARP_SLOTS;
}

static void eth_header(uint8_t *f, const uint8_t *dst, uint16_t type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, netif.mac, 6);
    put16(f + 12, type);
}

static void arp_send(uint16_t oper, const uint8_t *dst_mac, const uint8_t *target_mac,
                     uint32_t target_ip)
{
    uint8_t f[42];
    eth_header(f, dst_mac, ETH_ARP);
    uint8_t *a = f + 14;
    put16(a, 1);                            /* Ethernet */
    put16(a + 2, ETH_IPV4);
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, oper);
    memcpy(a + 8, netif.mac, 6);
    memcpy(a + 14, &netif.ip, 4);
    memcpy(a + 18, target_mac, 6);
    memcpy(a + 24, &target_ip, 4);
    net_send(f, sizeof f);
}

static void arp_receive(const uint8_t *a, uint32_t len)
{
    if (len < 28 || be16(a) != 1 || be16(a + 2) != ETH_IPV4 || a[4] != 6 || a[5] != 4)
        return;
    uint16_t oper = be16(a + 6);
    uint32_t sender_ip = get32(a + 14), target_ip = get32(a + 24);
    if (target_ip != netif.ip)
        return;
    arp_learn(sender_ip, a + 8);
    if (oper == 1)
        arp_send(2, a + 8, a + 8, sender_ip);
}

/* IPv4 + ICMP frame to ip (whose MAC is known), ICMP message of len bytes at icmp. */
static void ipv4_send_icmp(const uint8_t *mac, uint32_t ip, const uint8_t *icmp, uint32_t len)
{
    static uint8_t f[1514];
    static uint16_t ident;
    if (len > sizeof f - 34)
        return;
    eth_header(f, mac, ETH_IPV4);
    uint8_t *h = f + 14;
    h[0] = 0x45;
    h[1] = 0;
    put16(h + 2, 20 + len);
    put16(h + 4, ++ident);
    put16(h + 6, 0x4000);                   /* don't fragment */
    h[8] = 64;
    h[9] = 1;                               /* ICMP */
    put16(h + 10, 0);
    memcpy(h + 12, &netif.ip, 4);
    memcpy(h + 16, &ip, 4);
    put16(h + 10, checksum(h, 20));
    memcpy(f + 34, icmp, len);
    put16(f + 36, 0);
    put16(f + 36, checksum(f + 34, len));
    net_send(f, 34 + len);
}

static void ipv4_receive(const uint8_t *frame, const uint8_t *h, uint32_t len)
{
    if (len < 20 || (h[0] >> 4) != 4)
        return;
    uint32_t ihl = (h[0] & 15) * 4, total = be16(h + 2);
    if (ihl < 20 || total < ihl || total > len || h[9] != 1 || (be16(h + 6) & 0x3fff))
        return;
    uint32_t src = get32(h + 12), dst = get32(h + 16);
    if (dst != netif.ip || checksum(h, ihl))
        return;
    const uint8_t *icmp = h + ihl;
    uint32_t icmp_len = total - ihl;
    if (icmp_len < 8 || checksum(icmp, icmp_len))
        return;
    if (icmp[0] == 8 && icmp[1] == 0) {     /* echo request: answer it */
        static uint8_t reply[1480];
        memcpy(reply, icmp, icmp_len);
        reply[0] = 0;
        arp_learn(src, frame + 6);
        ipv4_send_icmp(frame + 6, src, reply, icmp_len);
    } else if (icmp[0] == 0 && src == ping_ip && be16(icmp + 4) == PING_ID
               && be16(icmp + 6) == ping_seq && !ping_got) {
        ping_rx_us = now_us();
        ping_ttl = h[8];
        ping_bytes = icmp_len;
        ping_got = 1;
    }
}

void net_receive(const uint8_t *frame, uint32_t len)
{
    if (len < 14)
        return;
    if (memcmp(frame, netif.mac, 6) && memcmp(frame, broadcast, 6))
        return;
    uint16_t type = be16(frame + 12);
    if (type == ETH_ARP)
        arp_receive(frame + 14, len - 14);
    else if (type == ETH_IPV4)
        ipv4_receive(frame, frame + 14, len - 14);
}

/* Wait with interrupts on until *flag or timeout ticks pass. */
static int wait_flag(volatile int *flag, const uint8_t *(*lookup)(uint32_t), uint32_t ip,
                     uint32_t timeout)
{
    uint32_t start = ticks;
    while (ticks - start < timeout) {
        if (flag ? *flag : lookup(ip) != 0)
            return 1;
        wait_for_interrupt();
    }
    return flag ? *flag : lookup(ip) != 0;
}

/* One echo request to ip (network order) with sequence number seq; 0 and *out filled on a
 * reply, -E_NODEV without a NIC, -E_HOSTUNREACH when ARP gets no answer, -E_TIMEDOUT. */
int net_ping(uint32_t ip, uint16_t seq, struct ping_result *out)
{
    static uint8_t icmp[64];
    if (!net_present)
        return -E_NODEV;
    if (ip == netif.ip) {                   /* ourselves: no frame leaves */
        out->rtt_us = 0;
        out->ttl = 64;
        out->bytes = sizeof icmp;
        return 0;
    }
    const uint8_t *mac = arp_lookup(ip);
    for (int attempt = 0; !mac && attempt < 3; attempt++) {
        static const uint8_t zero[6];
        arp_send(1, broadcast, zero, ip);
        if (wait_flag(0, arp_lookup, ip, TIMER_HZ / 2))
            mac = arp_lookup(ip);
    }
    if (!mac)
        return -E_HOSTUNREACH;
    uint8_t dst[6];
    memcpy(dst, mac, 6);
    icmp[0] = 8;
    icmp[1] = 0;
    put16(icmp + 4, PING_ID);
    put16(icmp + 6, seq);
    for (uint32_t i = 8; i < sizeof icmp; i++)
        icmp[i] = (uint8_t)i;
    ping_ip = ip;
    ping_seq = seq;
    ping_got = 0;
    uint32_t sent = now_us();
    ipv4_send_icmp(dst, ip, icmp, sizeof icmp);
    if (!wait_flag(&ping_got, 0, 0, TIMER_HZ))
        return -E_TIMEDOUT;
    out->rtt_us = ping_rx_us - sent;
    out->ttl = ping_ttl;
    out->bytes = ping_bytes;
    return 0;
}
