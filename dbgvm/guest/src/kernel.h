/* Kernel-wide declarations of the dbgvm bundled guest. */
#ifndef KERNEL_H
#define KERNEL_H

#include "syscall.h"
#include "ulib.h"

#define KCODE   0x08
#define KDATA   0x10
#define UCODE   0x1B
#define UDATA   0x23
#define TSSSEL  0x28

#define TIMER_HZ 100
#define PIT_DIVISOR 11932           /* 1193182 Hz / 100 */

/* Interrupt flag, plex86 style. The flag changes only through CLI and STI (never POPF, which a
 * deprivileged kernel cannot use to change IF), and the kernel keeps its own record of it for
 * save/restore instead of reading EFLAGS (PUSHF shows the real flags, not the virtual ones). */
extern volatile int irq_soft_if;

static inline void irq_disable(void)
{
    __asm__ volatile("cli" ::: "memory");
    irq_soft_if = 0;
}

static inline void irq_enable(void)
{
    irq_soft_if = 1;
    __asm__ volatile("sti" ::: "memory");
}

#define irq_save(flag) do { (flag) = irq_soft_if; irq_disable(); } while (0)
#define irq_restore(flag) do { if (flag) irq_enable(); } while (0)

/* Called with interrupts off: let one interrupt in, then off again. STI's one-instruction
 * shadow makes `sti; hlt` race-free. */
static inline void wait_for_interrupt(void)
{
    __asm__ volatile("sti; hlt; cli" ::: "memory");
}

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* The registers isr_common saves, lowest address first. */
struct frame {
    uint32_t es, ds;
    uint32_t edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;
    uint32_t vector, error;
    uint32_t eip, cs, eflags;
    uint32_t user_esp, user_ss;     /* only when entered from ring 3 */
};

/* entry.S */
extern char __kernel_end[], __user_start[], __user_data[], __user_end[];
extern char kstack_top[], ustack_top[];
extern uint32_t isr_table[];
void load_gdt(void *gdtr);
void load_idt(void *idtr);
void enter_user(void (*entry)(void), void *stack) __attribute__((noreturn));

/* kernel.c */
extern volatile uint32_t ticks;
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint32_t now_us(void);
void halt_forever(void) __attribute__((noreturn));
void poweroff(uint32_t status) __attribute__((noreturn));

/* hal.c: the HAL (docs/hal.md) and its devices */
struct hal_pkt {
    uint16_t channel;
    uint16_t op;
    uint32_t length;
    uint32_t seq;
    int32_t status;
} __attribute__((packed));

#define HAL_OK        0
#define HAL_PENDING   1
#define HAL_NOCHAN   (-3)
#define HAL_IOERR    (-5)
#define HAL_BADCALL  (-8)

#define CH_SYSTEM  0
#define CH_CONSOLE 1
#define CH_BLOCK   2
#define CH_NET     3

extern int hal_present;
extern uint32_t hal_irq_line;
extern uint32_t hal_abi;
int hal_probe(void);
int32_t hal_submit(void *pkt);
int32_t hal_post(void *pkt);
void hal_interrupt(void);

void console_init(void);
void console_write(const void *data, uint32_t len);
void console_set_script(const char *text, uint32_t len);
int console_read_line(char *out, uint32_t cap);
extern int console_input;            /* 1 when the HAL console delivers input */

extern int disk_present;
extern struct disk_info disk;
void disk_init(void);
int disk_read(uint32_t sector, void *buf512);
int disk_write(uint32_t sector, const void *buf512);

extern int net_present;
extern struct net_info netif;
void net_init(void);
int net_send(const void *frame, uint32_t len);

/* net.c */
void net_receive(const uint8_t *frame, uint32_t len);
int net_ping(uint32_t ip, uint16_t seq, struct ping_result *out);

/* fs.c */
void fs_init(const uint8_t *module, uint32_t size);
extern const char *fs_source;
extern int fs_count;
int fs_info(int index, const char **name, uint32_t *size);
int fs_read(int index, uint32_t offset, void *buf, uint32_t len);

/* shell.c (user mode) */
void shell_main(void) __attribute__((noreturn));

#endif
