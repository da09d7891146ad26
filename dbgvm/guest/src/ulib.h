/* Freestanding helpers shared by the kernel and the user-mode shell.
 *
 * ulib.c is linked into the user pages (user-readable, read-only for ring 3), so the shell can
 * call it and the kernel can too; it holds only pure functions, no state. */
#ifndef ULIB_H
#define ULIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* snprintf-like: %% %c %s %d %i %u %x %X %p, flags '-' and '0', a width, a precision for %s
 * (number or '*'); 'l' is accepted and ignored. Always NUL-terminates when cap > 0; returns the
 * number of characters stored (not counting the NUL). */
int vformat(char *buf, size_t cap, const char *fmt, va_list ap);
int format(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
