"""Booting Debian's unmodified i386 Linux kernel with a busybox initramfs.

:mod:`.boot` lays out a Linux boot (bzImage or vmlinux) as a core ``BootImage``;
:mod:`.bzimage` reads the bzImage format; :mod:`.initramfs` builds the initramfs;
:mod:`.fetch` gets the kernel and busybox from Debian with apt (``dbgvm linux fetch``).
"""
