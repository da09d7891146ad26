/* Shared freestanding helpers (see ulib.h). Lives in the user pages. */
#include "ulib.h"

void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--)
            *d++ = *s++;
    } else {
        while (n--)
            d[n] = s[n];
    }
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        if (!*a)
            return 0;
    }
    return 0;
}

struct out {
    char *buf;
    size_t cap;
    size_t len;
};

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->cap)
        o->buf[o->len++] = c;
}

static void pad(struct out *o, int n, char c)
{
    while (n-- > 0)
        put(o, c);
}

int vformat(char *buf, size_t cap, const char *fmt, va_list ap)
{
    struct out o = {buf, cap, 0};
    char digits[12];
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        fmt++;
        int left = 0, zero = 0, width = 0, prec = -1;
        for (;; fmt++) {
            if (*fmt == '-')
                left = 1;
            else if (*fmt == '0')
                zero = 1;
            else
                break;
        }
        if (*fmt == '*') {
            width = va_arg(ap, int);
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        if (*fmt == '.') {
            fmt++;
            prec = 0;
            if (*fmt == '*') {
                prec = va_arg(ap, int);
                fmt++;
            }
            while (*fmt >= '0' && *fmt <= '9')
                prec = prec * 10 + (*fmt++ - '0');
        }
        while (*fmt == 'l')
            fmt++;
        const char *s = digits;
        int n = 0, neg = 0;
        switch (*fmt) {
        case 's':
            s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            while (s[n] && (prec < 0 || n < prec))
                n++;
            zero = 0;
            break;
        case 'c':
            digits[0] = (char)va_arg(ap, int);
            n = 1;
            zero = 0;
            break;
        case 'd':
        case 'i':
        case 'u':
        case 'x':
        case 'X':
        case 'p': {
            unsigned int v = va_arg(ap, unsigned int);
            unsigned int base = (*fmt == 'd' || *fmt == 'i' || *fmt == 'u') ? 10 : 16;
            const char *set = *fmt == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            if ((*fmt == 'd' || *fmt == 'i') && (int)v < 0) {
                neg = 1;
                v = -v;
            }
            char tmp[12];
            int k = 0;
            do {
                tmp[k++] = set[v % base];
                v /= base;
            } while (v);
            while (k)
                digits[n++] = tmp[--k];
            break;
        }
        case '%':
            digits[0] = '%';
            n = 1;
            break;
        default:
            digits[0] = '%';
            digits[1] = *fmt ? *fmt : '%';
            n = 2;
            if (!*fmt)
                fmt--;
            break;
        }
        int fill = width - n - neg;
        if (!left && !zero)
            pad(&o, fill, ' ');
        if (neg)
            put(&o, '-');
        if (!left && zero)
            pad(&o, fill, '0');
        for (int i = 0; i < n; i++)
            put(&o, s[i]);
        if (left)
            pad(&o, fill, ' ');
    }
    if (cap)
        buf[o.len] = 0;
    return (int)o.len;
}

int format(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}
