/* Files for ls/cat: the first Multiboot module when it is a ustar or cpio (newc) archive,
 * else a small built-in set. Read-only; the data stays where the loader put it. */
#include "kernel.h"

#define MAX_FILES 64
#define NAME_MAX 128

static struct {
    char name[NAME_MAX];
    const uint8_t *data;
    uint32_t size;
} files[MAX_FILES];
int fs_count;
const char *fs_source = "built-in";

static const char readme[] =
    "This is the dbgvm bundled guest kernel: a small Multiboot kernel whose drivers talk to\n"
    "the host through the dbgvm HAL (console, disk, network), with a shell in ring 3.\n"
    "Give it files with --initrd ARCHIVE (tar or cpio newc), a disk with --disk FILE.\n";
static const char motd[] = "Welcome to the dbgvm guest. Type 'help' for commands.\n";

static void add(const char *name, uint32_t name_len, const uint8_t *data, uint32_t size)
{
    while (name_len >= 2 && name[0] == '.' && name[1] == '/')
        name += 2, name_len -= 2;
    while (name_len && name[0] == '/')
        name++, name_len--;
    if (!name_len || fs_count == MAX_FILES)
        return;
    if (name_len >= NAME_MAX)
        name_len = NAME_MAX - 1;
    memcpy(files[fs_count].name, name, name_len);
    files[fs_count].name[name_len] = 0;
    files[fs_count].data = data;
    files[fs_count].size = size;
    fs_count++;
}

static uint32_t field_len(const char *p, uint32_t max)
{
    uint32_t n = 0;
    while (n < max && p[n])
        n++;
    return n;
}

static uint32_t octal(const uint8_t *p, uint32_t len)
{
    uint32_t v = 0;
    for (uint32_t i = 0; i < len && p[i] >= '0' && p[i] <= '7'; i++)
        v = v * 8 + (p[i] - '0');
    return v;
}

static int hex8(const uint8_t *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        uint8_t c = p[i];
        if (c >= '0' && c <= '9')
            v = v * 16 + c - '0';
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = v * 16 + c - 'A' + 10;
        else
            return 0;
    }
    *out = v;
    return 1;
}

static void parse_tar(const uint8_t *m, uint32_t size)
{
    uint32_t off = 0;
    while (off + 512 <= size) {
        const uint8_t *h = m + off;
        if (!h[0])
            break;                          /* end-of-archive block */
        if (memcmp(h + 257, "ustar", 5))
            break;
        uint32_t fsize = octal(h + 124, 12);
        uint8_t type = h[156];
        uint32_t data = off + 512;
        if (data + fsize > size)
            break;
        if (type == '0' || type == 0) {
            char name[NAME_MAX];
            uint32_t plen = field_len((const char *)h + 345, 155), n = 0;
            if (plen && plen + 1 < NAME_MAX) {
                memcpy(name, h + 345, plen);
                name[plen] = '/';
                n = plen + 1;
            }
            uint32_t nlen = field_len((const char *)h, 100);
            if (n + nlen >= NAME_MAX)
                nlen = NAME_MAX - 1 - n;
            memcpy(name + n, h, nlen);
            add(name, n + nlen, m + data, fsize);
        }
        off = data + ((fsize + 511) & ~511u);
    }
}

static void parse_cpio(const uint8_t *m, uint32_t size)
{
    uint32_t off = 0;
    while (off + 110 <= size) {
        const uint8_t *h = m + off;
        uint32_t mode, fsize, namesize;
        if (memcmp(h, "07070", 5) || (h[5] != '1' && h[5] != '2'))
            break;
        if (!hex8(h + 14, &mode) || !hex8(h + 54, &fsize) || !hex8(h + 94, &namesize))
            break;
        uint32_t name = off + 110;
        uint32_t data = (name + namesize + 3) & ~3u;
        if (namesize == 0 || name + namesize > size || data + fsize > size)
            break;
        const char *n = (const char *)m + name;
        if (namesize == 11 && !memcmp(n, "TRAILER!!!", 10))
            break;
        if ((mode & 0170000) == 0100000)
            add(n, field_len(n, namesize), m + data, fsize);
        off = (data + fsize + 3) & ~3u;
    }
}

void fs_init(const uint8_t *module, uint32_t size)
{
    if (module && size >= 512 && !memcmp(module + 257, "ustar", 5)) {
        fs_source = "tar initrd";
        parse_tar(module, size);
        return;
    }
    if (module && size >= 110 && !memcmp(module, "07070", 5)) {
        fs_source = "cpio initrd";
        parse_cpio(module, size);
        return;
    }
    if (module)
        fs_source = "built-in; the initrd is neither tar nor cpio";
    add("README", 6, (const uint8_t *)readme, sizeof readme - 1);
    add("motd", 4, (const uint8_t *)motd, sizeof motd - 1);
}

int fs_info(int index, const char **name, uint32_t *size)
{
    if (index < 0 || index >= fs_count)
        return 0;
    *name = files[index].name;
    *size = files[index].size;
    return 1;
}

int fs_read(int index, uint32_t offset, void *buf, uint32_t len)
{
    if (index < 0 || index >= fs_count)
        return -E_NOENT;
    if (offset >= files[index].size)
        return 0;
    if (len > files[index].size - offset)
        len = files[index].size - offset;
    memcpy(buf, files[index].data + offset, len);
    return len;
}
