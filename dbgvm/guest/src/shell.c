/* The shell: a ring-3 program that asks the kernel for everything through INT 0x80. */
#include "syscall.h"
#include "ulib.h"

static inline int32_t sys(uint32_t n, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    int32_t r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d) : "memory");
    return r;
}

/* Output, buffered per line: one system call (one HAL packet) per line. */
static char obuf[1024];
static uint32_t olen;

static void flush(void)
{
    if (olen)
        sys(SYS_WRITE, (uint32_t)obuf, olen, 0, 0);
    olen = 0;
}

static void out(const char *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        obuf[olen++] = s[i];
        if (olen == sizeof obuf || s[i] == '\n')
            flush();
    }
}

static void print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void print(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    out(buf, n);
}

static __attribute__((noreturn)) void poweroff(uint32_t status)
{
    flush();
    sys(SYS_POWEROFF, status, 0, 0, 0);
    for (;;)
        ;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_spaces(const char *s)
{
    while (is_space(*s))
        s++;
    return s;
}

/* Copy the next word of *s into word (cap bytes), advance *s past it; returns its length. */
static uint32_t next_word(const char **s, char *word, uint32_t cap)
{
    const char *p = skip_spaces(*s);
    uint32_t n = 0;
    while (*p && !is_space(*p)) {
        if (n + 1 < cap)
            word[n++] = *p;
        p++;
    }
    word[n] = 0;
    *s = p;
    return n;
}

static int parse_number(const char *s, uint32_t *out)
{
    uint32_t v = 0, base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s)
        return 0;
    for (; *s; s++) {
        uint32_t d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            return 0;
        if (v > (0xFFFFFFFFu - d) / base)
            return 0;
        v = v * base + d;
    }
    *out = v;
    return 1;
}

static int parse_ip(const char *s, uint32_t *out)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) {
        uint32_t v = 0, digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 4) {
            v = v * 10 + (*s++ - '0');
            digits++;
        }
        if (!digits || v > 255 || (i < 3 && *s++ != '.'))
            return 0;
        b[i] = v;
    }
    if (*s)
        return 0;
    memcpy(out, b, 4);
    return 1;
}

static void cmd_help(void)
{
    static const char text[] = ("commands:\n"
          "  help               this list\n"
          "  echo TEXT          print TEXT\n"
          "  ls                 list the files\n"
          "  cat FILE           print a file\n"
          "  disk info          size of the disk\n"
          "  disk read N        hexdump of sector N\n"
          "  disk write N TEXT  write TEXT, zero-padded, to sector N\n"
          "  ping IP            send ICMP echo requests to IP\n"
          "  uptime             time since boot\n"
          "  poweroff           power off\n");
    out(text, sizeof text - 1);
}

static void cmd_ls(void)
{
    char name[128];
    for (int i = 0;; i++) {
        int32_t size = sys(SYS_FILE_INFO, i, (uint32_t)name, sizeof name, 0);
        if (size < 0)
            break;
        print("%-16s %u\n", name, size);
    }
}

static void cmd_cat(const char *args)
{
    char want[128], name[128];
    static char buf[512];
    if (!next_word(&args, want, sizeof want)) {
        print("usage: cat FILE\n");
        return;
    }
    for (int i = 0;; i++) {
        int32_t size = sys(SYS_FILE_INFO, i, (uint32_t)name, sizeof name, 0);
        if (size < 0)
            break;
        if (strcmp(name, want))
            continue;
        for (uint32_t off = 0; off < (uint32_t)size;) {
            int32_t n = sys(SYS_FILE_READ, i, off, (uint32_t)buf, sizeof buf);
            if (n <= 0)
                break;
            out(buf, n);
            off += n;
        }
        flush();
        return;
    }
    print("cat: %s: no such file\n", want);
}

static const char disk_usage[] = "usage: disk info | disk read N | disk write N TEXT\n";

static int disk_error(int32_t r)
{
    if (r == -E_NODEV)
        print("disk: no disk\n");
    else if (r < 0)
        print("disk: I/O error (%d)\n", r);
    return r < 0;
}

static void cmd_disk(const char *args)
{
    char sub[16], num[16];
    static uint8_t sector[512];
    struct disk_info info;
    uint32_t n = 0;
    next_word(&args, sub, sizeof sub);
    int is_info = !strcmp(sub, "info"), is_read = !strcmp(sub, "read");
    int is_write = !strcmp(sub, "write");
    if (!is_info && !is_read && !is_write) {
        print(disk_usage);
        return;
    }
    if (disk_error(sys(SYS_DISK_INFO, (uint32_t)&info, 0, 0, 0)))
        return;
    if (is_info) {
        print("disk: %u sectors of %u bytes (%u KiB), %s\n", info.sectors, info.sector_size,
              info.sectors / 1024 * info.sector_size + info.sectors % 1024 * info.sector_size / 1024,
              (info.flags & 1) ? "writes reach the host file" : "copy-on-write");
        return;
    }
    if (!next_word(&args, num, sizeof num) || !parse_number(num, &n)) {
        print(disk_usage);
        return;
    }
    if (n >= info.sectors) {
        print("disk: sector %u out of range (the disk has %u sectors)\n", n, info.sectors);
        return;
    }
    if (is_read) {
        if (disk_error(sys(SYS_DISK_READ, n, (uint32_t)sector, 0, 0)))
            return;
        for (int row = 0; row < 512; row += 16) {
            char ascii[17];
            print("%04x ", row);
            for (int i = 0; i < 16; i++) {
                uint8_t c = sector[row + i];
                print(i == 8 ? "  %02x" : " %02x", c);
                ascii[i] = (c >= 32 && c < 127) ? c : '.';
            }
            ascii[16] = 0;
            print("  |%s|\n", ascii);
        }
        return;
    }
    if (is_space(*args))
        args++;                             /* TEXT is the rest of the line after one space */
    uint32_t len = strlen(args);
    if (len > 512) {
        print("disk: text longer than 512 bytes\n");
        return;
    }
    memset(sector, 0, sizeof sector);
    memcpy(sector, args, len);
    if (disk_error(sys(SYS_DISK_WRITE, n, (uint32_t)sector, 0, 0)))
        return;
    print("disk: wrote %u bytes to sector %u\n", len, n);
}

static void cmd_ping(const char *args)
{
    char arg[32];
    uint32_t ip;
    struct net_info me;
    if (!next_word(&args, arg, sizeof arg) || !parse_ip(arg, &ip)) {
        print("usage: ping IP (four decimal numbers, e.g. 10.0.2.16)\n");
        return;
    }
    if (sys(SYS_NET_INFO, (uint32_t)&me, 0, 0, 0) < 0) {
        print("ping: no network\n");
        return;
    }
    const uint32_t count = 3;
    uint32_t received = 0;
    print("PING %s: %u echo requests\n", arg, count);
    for (uint32_t seq = 1; seq <= count; seq++) {
        struct ping_result r;
        int32_t s = sys(SYS_PING, ip, seq, (uint32_t)&r, 0);
        if (s == -E_HOSTUNREACH) {
            print("ping: %s: no ARP reply (host unreachable)\n", arg);
            return;
        }
        if (s == -E_TIMEDOUT) {
            print("no reply from %s: icmp_seq=%u (timeout)\n", arg, seq);
            continue;
        }
        if (s < 0) {
            print("ping: error %d\n", s);
            return;
        }
        received++;
        print("%u bytes from %s: icmp_seq=%u ttl=%u time=%u.%03u ms\n", r.bytes, arg, seq,
              r.ttl, r.rtt_us / 1000, r.rtt_us % 1000);
    }
    print("--- %s: %u transmitted, %u received, %u%% packet loss\n", arg, count, received,
          (count - received) * 100 / count);
}

static void cmd_echo(const char *args)
{
    /* Words joined by one space, as sh's echo prints its arguments. */
    for (int first = 1; *(args = skip_spaces(args)); first = 0) {
        const char *start = args;
        while (*args && !is_space(*args))
            args++;
        if (!first)
            out(" ", 1);
        out(start, args - start);
    }
    out("\n", 1);
}

static void cmd_uptime(void)
{
    uint32_t t = sys(SYS_UPTIME, 0, 0, 0, 0);
    print("up %u.%02u s\n", t / 100, t % 100);
}

static char line[1024];

void shell_main(void)
{
    char cmd[32];
    for (;;) {
        print("$ ");
        flush();
        int32_t n = sys(SYS_READLINE, (uint32_t)line, sizeof line, 0, 0);
        if (n < 0) {
            print("\n");
            poweroff(0);                    /* end of input at the prompt, like sh */
        }
        const char *args = line;
        if (!next_word(&args, cmd, sizeof cmd))
            continue;
        if (!strcmp(cmd, "help"))
            cmd_help();
        else if (!strcmp(cmd, "echo"))
            cmd_echo(args);
        else if (!strcmp(cmd, "ls"))
            cmd_ls();
        else if (!strcmp(cmd, "cat"))
            cmd_cat(args);
        else if (!strcmp(cmd, "disk"))
            cmd_disk(args);
        else if (!strcmp(cmd, "ping"))
            cmd_ping(args);
        else if (!strcmp(cmd, "uptime"))
            cmd_uptime();
        else if (!strcmp(cmd, "poweroff"))
            poweroff(0);
        else
            print("%s: unknown command (try 'help')\n", cmd);
    }
}
