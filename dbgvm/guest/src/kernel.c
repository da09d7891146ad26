/* The dbgvm bundled guest kernel: Multiboot entry, descriptor tables, paging, PIC and PIT,
 * exceptions, system calls, and the drop to the ring-3 shell. */
#include "kernel.h"

volatile int irq_soft_if;
volatile uint32_t ticks;

#define MBI_MEMORY  (1u << 0)
#define MBI_CMDLINE (1u << 2)
#define MBI_MODS    (1u << 3)

struct multiboot_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
};

struct multiboot_module {
    uint32_t start, end, string, reserved;
};

struct tss {
    uint32_t link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t es, cs, ss, ds, fs, gs, ldt, iomap;
};

/* GDT, IDT and TSS share one page of their own: after LGDT/LIDT each write to that page costs
 * a trap under dbgvm, so nothing else may live there. */
static union {
    struct {
        uint64_t gdt[6];
        uint64_t idt[256];
        struct tss tss;
    } t;
    char page[4096];
} tables_page __attribute__((aligned(4096)));
#define tables tables_page.t

static struct __attribute__((packed)) {
    uint16_t limit;
    uint32_t base;
} gdtr, idtr;

#define MAX_TABLES 16                       /* page tables: up to 64 MiB identity-mapped */
static uint32_t page_dir[1024] __attribute__((aligned(4096)));
static uint32_t page_tables[MAX_TABLES][1024] __attribute__((aligned(4096)));

static char cmdline[256];
static uint32_t ram_top;

/* ---- console output ---- */

void kprintf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    console_write(buf, n);
}

void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

void poweroff(uint32_t status)
{
    static struct {
        struct hal_pkt h;
        uint32_t status;
    } pkt __attribute__((aligned(16)));
    if (hal_present) {
        pkt.h.channel = CH_SYSTEM;
        pkt.h.op = 1;
        pkt.h.length = 4;
        pkt.status = status;
        hal_submit(&pkt);
        /* The host ends the run at its next boundary: idle until it does. */
        for (int i = 0; i < 100; i++)
            wait_for_interrupt();
    }
    outb(0xF4, (uint8_t)status);            /* QEMU isa-debug-exit / dbgvm: (status << 1) | 1 */
    halt_forever();
}

/* ---- time ---- */

static uint16_t pit_count(void)
{
    outb(0x43, 0x00);                       /* latch channel 0 */
    uint8_t lo = inb(0x40);
    uint8_t hi = inb(0x40);
    return lo | (hi << 8);
}

/* Microseconds of PIT time since boot (wraps after 71 minutes; use differences). Interrupts
 * must be off. */
uint32_t now_us(void)
{
    uint32_t t = ticks;
    uint32_t count = pit_count();
    outb(0x20, 0x0A);                       /* read the master's IRR */
    if ((inb(0x20) & 1) && count > PIT_DIVISOR / 2)
        t++;                                /* wrapped, tick not yet counted */
    return t * (1000000 / TIMER_HZ) + (PIT_DIVISOR - count) * (1000000 / TIMER_HZ) / PIT_DIVISOR;
}

/* ---- descriptor tables ---- */

static uint64_t segment(uint32_t base, uint32_t limit, uint32_t access, uint32_t flags)
{
    return (limit & 0xFFFF) | ((uint64_t)(base & 0xFFFFFF) << 16) | ((uint64_t)access << 40)
        | ((uint64_t)((limit >> 16) & 0xF) << 48) | ((uint64_t)flags << 52)
        | ((uint64_t)(base >> 24) << 56);
}

static uint64_t gate(uint32_t handler, uint32_t attr)
{
    return (handler & 0xFFFF) | ((uint64_t)KCODE << 16) | ((uint64_t)attr << 40)
        | ((uint64_t)(handler >> 16) << 48);
}

static void setup_tables(void)
{
    tables.gdt[0] = 0;
    tables.gdt[1] = segment(0, 0xFFFFF, 0x9A, 0xC);     /* 0x08 kernel code */
    tables.gdt[2] = segment(0, 0xFFFFF, 0x92, 0xC);     /* 0x10 kernel data */
    tables.gdt[3] = segment(0, 0xFFFFF, 0xFA, 0xC);     /* 0x18 user code */
    tables.gdt[4] = segment(0, 0xFFFFF, 0xF2, 0xC);     /* 0x20 user data */
    tables.gdt[5] = segment((uint32_t)&tables.tss, sizeof(struct tss) - 1, 0x89, 0);
    tables.tss.ss0 = KDATA;
    tables.tss.esp0 = (uint32_t)kstack_top;
    tables.tss.iomap = sizeof(struct tss);
    for (int v = 0; v < 48; v++)
        tables.idt[v] = gate(isr_table[v], 0x8E);       /* interrupt gates, DPL 0 */
    tables.idt[0x80] = gate(isr_table[48], 0xEE);       /* system calls: DPL 3 */
    gdtr.limit = sizeof(tables.gdt) - 1;
    gdtr.base = (uint32_t)tables.gdt;
    idtr.limit = sizeof(tables.idt) - 1;
    idtr.base = (uint32_t)tables.idt;
    load_gdt(&gdtr);
    load_idt(&idtr);
}

/* ---- PIC and PIT ---- */

static uint8_t pic_mask_master = 0xFF;

static void setup_pic_pit(void)
{
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    outb(0x21, 0x20);                       /* master: vectors 0x20..0x27 */
    outb(0xA1, 0x28);                       /* slave: vectors 0x28..0x2F */
    outb(0x21, 4);
    outb(0xA1, 2);
    outb(0x21, 1);
    outb(0xA1, 1);
    pic_mask_master = 0xFE;                 /* timer only, for now */
    outb(0x21, pic_mask_master);
    outb(0xA1, 0xFF);
    outb(0x43, 0x34);                       /* channel 0, lobyte/hibyte, mode 2 */
    outb(0x40, PIT_DIVISOR & 0xFF);
    outb(0x40, PIT_DIVISOR >> 8);
}

static void unmask_irq(uint32_t line)
{
    if (line < 8) {
        pic_mask_master &= ~(1u << line);
        outb(0x21, pic_mask_master);
    }
}

/* ---- paging ---- */

/* Identity-map [4 KiB, end): kernel pages supervisor, the shell's code read-only user, its
 * data/bss/stack writable user. Page 0 stays unmapped; nothing at or above 0xFFC00000 (the
 * monitor's) is ever mapped. All of it is written before paging is on: no traps. */
static void setup_paging(uint32_t end)
{
    uint32_t user_start = (uint32_t)__user_start, user_data = (uint32_t)__user_data;
    uint32_t user_end = (uint32_t)__user_end;
    end = (end + 0xFFF) & ~0xFFFu;
    if (end > MAX_TABLES * 0x400000u)
        end = MAX_TABLES * 0x400000u;
    for (uint32_t page = 0x1000; page < end; page += 0x1000) {
        uint32_t flags = 0x3;               /* present, writable, supervisor */
        if (page >= user_start && page < user_data)
            flags = 0x5;                    /* present, read-only, user */
        else if (page >= user_data && page < user_end)
            flags = 0x7;                    /* present, writable, user */
        page_tables[page >> 22][(page >> 12) & 1023] = page | flags;
    }
    for (uint32_t t = 0; t < (end + 0x3FFFFF) >> 22; t++)
        page_dir[t] = (uint32_t)page_tables[t] | 0x7;   /* the PTEs decide U/S and R/W */
    __asm__ volatile("mov %0, %%cr3" : : "r"(page_dir) : "memory");
    uint32_t cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    cr0 |= 0x80000000u;
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
}

/* ---- interrupts and exceptions ---- */

static const char *const exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
    "#26", "#27", "#28", "#29", "#SX", "#31",
};

static void exception(struct frame *f)
{
    const uint8_t *insn = (const uint8_t *)f->eip;
    int from_user = (f->cs & 3) == 3;
    if (f->vector == 6 && !from_user && insn[0] == 0x0F && insn[1] == 0x01 && insn[2] == 0xC1) {
        /* VMCALL without a HAL (e.g. under QEMU): the call fails with BADCALL. */
        f->eip += 3;
        f->eax = (uint32_t)HAL_BADCALL;
        return;
    }
    uint32_t cr2 = 0;
    if (f->vector == 14)
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    kprintf("exception %s (vector %u) at eip 0x%08x, error 0x%08x, cr2 0x%08x: %s\n",
            exception_names[f->vector & 31], f->vector, f->eip, f->error, cr2,
            from_user ? "user program killed, shell restarted" : "kernel halted");
    if (!from_user)
        halt_forever();
    static int user_faults;
    if (++user_faults > 5) {
        kprintf("too many faults in the shell: power off\n");
        poweroff(1);
    }
    enter_user(shell_main, ustack_top);
}

static void irq(uint32_t line)
{
    if (line >= 8)
        outb(0xA0, 0x20);
    outb(0x20, 0x20);                       /* EOI first: a later HAL fill raises a new IRQ */
    if (line == 0)
        ticks++;
    if (hal_present && line == hal_irq_line)
        hal_interrupt();
}

/* ---- system calls ---- */

static int user_ok(uint32_t addr, uint32_t len, int write)
{
    uint32_t lo = write ? (uint32_t)__user_data : (uint32_t)__user_start;
    uint32_t hi = (uint32_t)__user_end;
    return addr >= lo && addr <= hi && len <= hi - addr;
}

static int32_t sys_write(uint32_t buf, uint32_t len)
{
    if (!user_ok(buf, len, 0))
        return -E_FAULT;
    console_write((const void *)buf, len);
    return len;
}

static int32_t sys_file_info(uint32_t index, uint32_t buf, uint32_t cap)
{
    const char *name;
    uint32_t size;
    if (cap == 0 || !user_ok(buf, cap, 1))
        return -E_FAULT;
    if (!fs_info(index, &name, &size))
        return -E_NOENT;
    uint32_t n = strlen(name);
    if (n >= cap)
        n = cap - 1;
    memcpy((void *)buf, name, n);
    ((char *)buf)[n] = 0;
    return size;
}

static int32_t sys_disk(uint32_t op, uint32_t a, uint32_t b)
{
    if (!disk_present)
        return -E_NODEV;
    if (op == SYS_DISK_INFO) {
        if (!user_ok(a, sizeof(struct disk_info), 1))
            return -E_FAULT;
        memcpy((void *)a, &disk, sizeof disk);
        return 0;
    }
    if (!user_ok(b, 512, op == SYS_DISK_READ))
        return -E_FAULT;
    if (a >= disk.sectors)
        return -E_INVAL;
    return op == SYS_DISK_READ ? disk_read(a, (void *)b) : disk_write(a, (const void *)b);
}

static void syscall(struct frame *f)
{
    uint32_t a = f->ebx, b = f->ecx, c = f->edx, d = f->esi;
    int32_t r;
    switch (f->eax) {
    case SYS_WRITE:
        r = sys_write(a, b);
        break;
    case SYS_READLINE:
        r = (b && user_ok(a, b, 1)) ? console_read_line((char *)a, b) : -E_FAULT;
        break;
    case SYS_UPTIME:
        r = ticks;
        break;
    case SYS_POWEROFF:
        poweroff(a);
    case SYS_FILE_INFO:
        r = sys_file_info(a, b, c);
        break;
    case SYS_FILE_READ:
        r = user_ok(c, d, 1) ? fs_read(a, b, (void *)c, d) : -E_FAULT;
        break;
    case SYS_DISK_INFO:
    case SYS_DISK_READ:
    case SYS_DISK_WRITE:
        r = sys_disk(f->eax, a, b);
        break;
    case SYS_PING:
        if (!user_ok(c, sizeof(struct ping_result), 1))
            r = -E_FAULT;
        else
            r = net_ping(a, (uint16_t)b, (struct ping_result *)c);
        break;
    case SYS_NET_INFO:
        if (!net_present)
            r = -E_NODEV;
        else if (!user_ok(a, sizeof(struct net_info), 1))
            r = -E_FAULT;
        else {
            memcpy((void *)a, &netif, sizeof netif);
            r = 0;
        }
        break;
    default:
        r = -E_INVAL;
        break;
    }
    f->eax = (uint32_t)r;
}

void isr_dispatch(struct frame *f)
{
    int saved = irq_soft_if;                /* the gate cleared IF */
    irq_soft_if = 0;
    if (f->vector == 0x80)
        syscall(f);
    else if (f->vector >= 0x20 && f->vector < 0x30)
        irq(f->vector - 0x20);
    else
        exception(f);
    irq_soft_if = saved;                    /* IRET restores the interrupted IF */
}

/* ---- boot ---- */

static const char *find_word(const char *s, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = s; *p; p++)
        if ((p == s || p[-1] == ' ') && !strncmp(p, word, n))
            return p + n;
    return 0;
}

void kmain(uint32_t magic, const struct multiboot_info *mbi)
{
    const uint8_t *module = 0;
    uint32_t module_size = 0, end = (uint32_t)__user_end;
    ram_top = 0x400000;
    if (magic == 0x2BADB002) {
        if (mbi->flags & MBI_MEMORY)
            ram_top = 0x100000 + mbi->mem_upper * 1024;
        if (mbi->flags & MBI_CMDLINE) {
            const char *s = (const char *)mbi->cmdline;
            size_t n = strlen(s);
            if (n >= sizeof cmdline)
                n = sizeof cmdline - 1;
            memcpy(cmdline, s, n);
        }
        if ((mbi->flags & MBI_MODS) && mbi->mods_count) {
            const struct multiboot_module *m = (const struct multiboot_module *)mbi->mods_addr;
            module = (const uint8_t *)m->start;
            module_size = m->end - m->start;
            if (m->end > end)
                end = m->end;
        }
    }
    if (end > ram_top)
        end = ram_top;
    if (module && (uint32_t)module + module_size > end) {
        module = 0;                         /* beyond what we can map */
        module_size = 0;
    }
    setup_tables();
    setup_pic_pit();
    setup_paging(end);

    hal_probe();
    console_init();
    const char *script = find_word(cmdline, "script=");
    if (script)
        console_set_script(script, strlen(script));
    if (hal_present)
        kprintf("dbgvm guest: HAL ABI %u, irq %u, %u KiB RAM\n", hal_abi, hal_irq_line,
                ram_top >> 10);
    else
        kprintf("dbgvm guest: no HAL (console on port 0xe9), %u KiB RAM\n", ram_top >> 10);
    disk_init();
    net_init();
    if (hal_present)
        unmask_irq(hal_irq_line);
    if (disk_present)
        kprintf("disk: %u sectors%s\n", disk.sectors,
                (disk.flags & 1) ? ", writable" : ", copy-on-write");
    else
        kprintf("disk: none\n");
    if (net_present) {
        const uint8_t *ip = (const uint8_t *)&netif.ip, *mac = netif.mac;
        uint32_t mask = netif.netmask, bits = 0;
        for (int i = 0; i < 32; i++)
            bits += (mask >> i) & 1;
        kprintf("net: %02x:%02x:%02x:%02x:%02x:%02x %u.%u.%u.%u/%u\n", mac[0], mac[1], mac[2],
                mac[3], mac[4], mac[5], ip[0], ip[1], ip[2], ip[3], bits);
    } else {
        kprintf("net: none\n");
    }
    fs_init(module, module_size);
    kprintf("files: %d (%s)\n", fs_count, fs_source);
    enter_user(shell_main, ustack_top);
}
