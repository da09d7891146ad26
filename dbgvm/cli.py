"""The ``dbgvm`` command.

Exit status: the guest's debug-exit status when it writes port 0xF4; 0 when the guest ends
otherwise (HLT with nothing to wake it, the instruction limit); 1 with a one-line message when
the monitor stops the guest (unsupported instruction, triple fault, bad memory); 2 when the
command line or the kernel file is wrong and nothing ran.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from .core.events import Event, EventKind, parse_kinds
from .core.faults import StopReason
from .core.loader import LoadError, Module, load
from .core.machine import DEFAULT_RAM_MB, Machine
from .core.uc_internals import UnicornLayoutError

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbgvm", description="A debugger-oriented x86 VM.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="boot a 32-bit ELF (Multiboot v1) kernel",
                         description="Boot KERNEL deprivileged and run it.")
    run.add_argument("kernel", metavar="KERNEL", help="ELF32 kernel (Multiboot v1 gets EAX/EBX "
                     "and an info block as QEMU's -kernel gives them)")
    run.add_argument("--append", default="", metavar="S", help="kernel command line")
    run.add_argument("--initrd", action="append", default=[], metavar="FILE",
                     help="a Multiboot module (repeat for more; 'FILE args' passes a cmdline)")
    run.add_argument("-m", type=int, default=DEFAULT_RAM_MB, metavar="MB",
                     help=f"guest RAM in MiB (default {DEFAULT_RAM_MB})")
    run.add_argument("--trace", default="", metavar="KINDS",
                     help="print events of these kinds (comma list, or 'all') to stderr")
    run.add_argument("--trace-out", metavar="FILE", help="write events as JSON Lines to FILE "
                     "(the kinds of --trace, or all kinds when --trace is not given)")
    run.add_argument("--max-insns", type=int, metavar="N", help="stop after N instructions")
    run.add_argument("--batch", action="store_true",
                     help="no interactive prompt: run to the end and exit")
    run.add_argument("-s", dest="gdb_default", action="store_true",
                     help="serve gdb on 127.0.0.1:1234 (shorthand for --gdb 1234)")
    run.add_argument("--gdb", metavar="[HOST:]PORT",
                     help="serve gdb on PORT (loopback unless HOST is named)")
    run.add_argument("-S", dest="paused", action="store_true",
                     help="do not start the guest: wait for gdb to continue it")
    run.add_argument("--gdb-transcript", metavar="FILE",
                     help="record every packet exchanged with gdb, as JSON Lines (tests)")
    return parser


def _modules(specs: list[str]) -> tuple[Module, ...]:
    modules = []
    for spec in specs:
        path, _, args = spec.partition(" ")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise LoadError(f"{path}: cannot read: {exc.strerror}") from None
        modules.append(Module(path, data, spec))
    return tuple(modules)


def _write_console(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def run_command(args: argparse.Namespace, err: TextIO) -> int:
    try:
        trace_kinds = parse_kinds(args.trace) if args.trace else frozenset()
    except ValueError as exc:
        print(f"dbgvm: --trace: {exc}", file=err)
        return USAGE_ERROR
    if args.max_insns is not None and args.max_insns <= 0:
        print("dbgvm: --max-insns must be positive", file=err)
        return USAGE_ERROR
    try:
        machine = Machine(ram_mb=args.m, console=_write_console)
        image = load(args.kernel, machine.ram_size, args.append, _modules(args.initrd))
    except (LoadError, ValueError) as exc:
        print(f"dbgvm: {exc}", file=err)
        return USAGE_ERROR
    except UnicornLayoutError as exc:
        print(f"dbgvm: {exc}", file=err)
        return 1
    machine.load(image)
    if trace_kinds:
        machine.events.subscribe(trace_kinds, lambda e: print(e.describe(), file=err))
    out = None
    if args.trace_out:
        try:
            out = open(args.trace_out, "w", encoding="utf-8")
        except OSError as exc:
            print(f"dbgvm: --trace-out {args.trace_out}: {exc.strerror}", file=err)
            return USAGE_ERROR

        def write_event(event: Event, out: TextIO = out) -> None:
            out.write(event.to_json() + "\n")
        machine.events.subscribe(trace_kinds or frozenset(EventKind), write_event)
    try:
        if args.gdb or args.gdb_default:
            return _serve_gdb(machine, args, err)
        stop = machine.run(args.max_insns)
    finally:
        if out is not None:
            out.close()
    sys.stdout.flush()
    if stop.reason is not StopReason.DEBUG_EXIT:
        print(f"dbgvm: {stop.reason.value}: {stop.message}", file=err)
    return stop.exit_status


def _serve_gdb(machine: Machine, args: argparse.Namespace, err: TextIO) -> int:
    """Run (or, with -S, wait) until gdb attaches, then serve debuggers until one kills the
    VM; the guest runs only when gdb continues it."""
    from .gdbstub.server import GdbServer, parse_address
    from .gdbstub.transcript import Transcript
    from .repl.commands import Monitor

    try:
        address = parse_address(args.gdb or "1234")
        server = GdbServer(machine, address, monitor=Monitor(machine).run,
                           log=lambda text: print(text, file=err))
    except (ValueError, OSError) as exc:
        print(f"dbgvm: --gdb: {exc}", file=err)
        return USAGE_ERROR
    if args.gdb_transcript:
        server.transcript = Transcript(args.gdb_transcript)
    host, port = server.address
    print(f"dbgvm: waiting for gdb on {host}:{port}", file=err)
    if not args.paused:
        import select

        def gdb_arrived() -> bool:
            return bool(select.select([server.listener], [], [], 0)[0])
        stop = machine.run(args.max_insns, interrupted=gdb_arrived)
        if stop.reason is not StopReason.REQUESTED:
            if stop.reason is not StopReason.DEBUG_EXIT:
                print(f"dbgvm: {stop.reason.value}: {stop.message}", file=err)
            return stop.exit_status
    server.serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run_command(args, sys.stderr)
    return USAGE_ERROR
