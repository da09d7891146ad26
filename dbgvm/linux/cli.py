"""``dbgvm linux``: commands about booting Linux (for now, getting a kernel to boot)."""
from __future__ import annotations

import argparse
import shlex
from typing import Any, TextIO

from .fetch import FetchError, fetch

FAILED = 1


def add_parser(subparsers: Any) -> None:
    """Add ``linux`` and its subcommands to the main command's subparsers."""
    linux = subparsers.add_parser("linux", help="get Debian's i386 Linux kernel and a busybox "
                                  "initramfs to boot", description="Commands for booting "
                                  "Linux under dbgvm.")
    sub = linux.add_subparsers(dest="linux_command", required=True)
    get = sub.add_parser("fetch", help="download the newest Debian 12 686 kernel and "
                         "busybox-static with apt; build the initramfs",
                         description="Download the newest linux-image-6.1.0-*-686-unsigned "
                         "and busybox-static (i386) with apt into $XDG_CACHE_HOME/dbgvm/linux "
                         "and build a busybox initramfs; print their paths. Nothing is "
                         "downloaded when the cache has them, unless --update. Enabling i386 "
                         "packages and apt-get update need root or password-less sudo.")
    get.add_argument("--update", action="store_true",
                     help="look for a newer kernel and busybox even when some are cached")
    get.add_argument("--print-paths", action="store_true",
                     help="print only the kernel's and the initrd's paths, one a line")


def linux_command(args: argparse.Namespace, err: TextIO) -> int:
    """Run ``dbgvm linux ...``: 0 on success, 1 with a one-line message on failure."""
    try:
        files = fetch(lambda text: print(f"dbgvm linux fetch: {text}", file=err, flush=True),
                      update=args.update)
    except FetchError as exc:
        print(f"dbgvm linux fetch: {exc}", file=err)
        return FAILED
    if args.print_paths:
        print(files.kernel)
        print(files.initrd)
        return 0
    print(f"kernel: {files.kernel} (Linux {files.release})")
    print(f"initrd: {files.initrd}")
    print(f"boot it: dbgvm run {shlex.quote(str(files.kernel))} --initrd "
          f"{shlex.quote(str(files.initrd))} --append 'console=ttyS0'")
    return 0
