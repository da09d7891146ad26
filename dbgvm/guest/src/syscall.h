/* The system-call ABI between the user-mode shell and the kernel: INT 0x80, EAX = number,
 * arguments in EBX, ECX, EDX, ESI; the result comes back in EAX (negative = error), every
 * other register is preserved. Pointers must lie in the user pages. See docs/guest.md. */
#ifndef SYSCALL_H
#define SYSCALL_H

#include <stdint.h>

#define SYS_WRITE      1   /* (buf, len) -> len */
#define SYS_READLINE   2   /* (buf, cap) -> line length without the newline, -1 at end of input */
#define SYS_UPTIME     3   /* () -> timer ticks since boot (100 Hz) */
#define SYS_POWEROFF   4   /* (status) -> does not return */
#define SYS_FILE_INFO  5   /* (index, name buf, cap) -> file size, -ENOENT past the last file */
#define SYS_FILE_READ  6   /* (index, offset, buf, len) -> bytes copied */
#define SYS_DISK_INFO  7   /* (struct disk_info *) -> 0 */
#define SYS_DISK_READ  8   /* (sector, buf[512]) -> 0 */
#define SYS_DISK_WRITE 9   /* (sector, buf[512]) -> 0 (written and flushed) */
#define SYS_PING       10  /* (ipv4 in network order, icmp seq, struct ping_result *) -> 0 */
#define SYS_NET_INFO   11  /* (struct net_info *) -> 0 */

#define E_NOENT        2
#define E_IO           5
#define E_FAULT        14
#define E_NODEV        19
#define E_INVAL        22
#define E_TIMEDOUT     110
#define E_HOSTUNREACH  113

struct disk_info {
    uint32_t sectors;
    uint32_t sector_size;
    uint32_t flags;             /* bit 0: writes reach the host file */
};

struct ping_result {
    uint32_t rtt_us;            /* round trip in microseconds of PIT time */
    uint32_t ttl;
    uint32_t bytes;             /* ICMP bytes in the reply */
};

struct net_info {
    uint8_t mac[6];
    uint8_t pad[2];
    uint32_t ip;                /* network order */
    uint32_t netmask;           /* network order */
};

#endif
