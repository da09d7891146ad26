"""The ``dbgvm`` command.

Exit status: the guest's status when it powers off through the HAL or writes the debug-exit
port 0xF4; 0 when the guest ends otherwise (HLT with nothing to wake it, the instruction limit,
a guest reset: triple fault or keyboard-controller reset, as QEMU's -no-reboot);
1 with a one-line message when the monitor stops the guest (unsupported instruction, double
fault, bad memory); 2 when the command line, the kernel or a file is wrong and nothing ran.
An output file that cannot be written (--trace-out, --pcap, --record: a full disk, a closed
pipe) is one ``dbgvm: OPTION: cannot write FILE: CAUSE`` line and ends the run: status 2 if the
guest had not started, else 1. Ctrl-C in a --batch run stops the guest at an instruction
boundary (status 130), so a recording it ends is a complete trace that replays verified.
"""
from __future__ import annotations

import argparse
import datetime
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .core.events import Event, EventKind, parse_kinds
from .core.faults import StopReason
from .boot import prepare_boot
from .core.loader import LoadError, Module
from .core.machine import DEFAULT_RAM_MB, MAX_RAM_MB, Stop
from .core.uc_internals import UnicornLayoutError
from .domains import DomainConfig, Domains
from .hal.block import DiskError
from .hal.pcap import PcapWriter
from .linux import cli as linux_cli
from .record.recorder import Recorder, file_entry
from .record.replay import Replay
from .record.reverse import DEFAULT_INTERVAL, ReverseEngine, SeenOutput
from .record.trace import MAX_VMS, TraceError
from .record.trace import read as read_trace

if TYPE_CHECKING:
    from .gdbstub.hostio import ServedFile
    from .repl.commands import CommandInterpreter

USAGE_ERROR = 2
INTERRUPTED = 130                # as a shell reports a command ended by SIGINT
_QUIET_STOPS = frozenset({StopReason.DEBUG_EXIT, StopReason.POWEROFF})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbgvm", description="A debugger-oriented x86 VM.")
    parser.add_argument("--version", action="version", version=f"dbgvm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="boot a 32-bit ELF (Multiboot v1) kernel, or the bundled "
                         "guest", description="Boot KERNEL (default: the bundled guest kernel) "
                         "deprivileged and run it.")
    run.add_argument("kernel", metavar="KERNEL", nargs="?",
                     help="ELF32 kernel (Multiboot v1 gets EAX/EBX and an info block as QEMU's "
                     "-kernel gives them); default: the bundled guest, built on first use")
    run.add_argument("-kernel", dest="kernel_option", metavar="KERNEL",
                     help="the kernel, as QEMU spells it (instead of the KERNEL argument)")
    run.add_argument("--append", "-append", default="", metavar="S",
                     help="kernel command line (Linux also gets reservetop=4M: "
                     "docs/linux.md)")
    run.add_argument("--initrd", "-initrd", action="append", default=[], metavar="FILE",
                     help="Linux: the initramfs; Multiboot: a module (repeat for more; "
                     "'FILE args' passes a cmdline)")
    run.add_argument("--boot-decompressor", action="store_true",
                     help="Linux bzImage: run the kernel's own decompressor (slow: ~2.3 G "
                     "instructions) instead of loading the vmlinux dbgvm unpacks")
    run.add_argument("--rtc-base", default="utc", metavar="utc|DATE|SECONDS",
                     help="what the CMOS clock reads at boot, as QEMU's -rtc base=: the host's "
                     "time (default), an ISO date (2006-06-17T16:01:21) or Unix seconds; a "
                     "fixed base makes a Linux run repeatable")
    run.add_argument("-m", type=int, default=DEFAULT_RAM_MB, metavar="MB",
                     help=f"guest RAM in MiB (default {DEFAULT_RAM_MB})")
    run.add_argument("--disk", metavar="FILE", help="disk image for the HAL block device "
                     "(copy-on-write: the file is never changed unless --disk-writable)")
    run.add_argument("--disk-writable", action="store_true",
                     help="let guest writes reach the --disk file (FLUSH fsyncs it)")
    run.add_argument("--vms", type=int, default=1, metavar="N",
                     help="run N copies of the guest side by side on one virtual switch "
                     "(stdin lines starting with '@K ' go to VM K)")
    run.add_argument("--pcap", metavar="FILE",
                     help="write every frame the virtual switch forwards to FILE (pcap)")
    run.add_argument("--trace", default="", metavar="KINDS",
                     help="print events of these kinds (comma list, or 'all') to stderr")
    run.add_argument("--trace-out", metavar="FILE", help="write events as JSON Lines to FILE "
                     "(the kinds of --trace, or all kinds when --trace is not given)")
    run.add_argument("--max-insns", type=int, metavar="N", help="stop after N instructions")
    run.add_argument("--batch", action="store_true",
                     help="no interactive prompt: the console is the terminal; run to the end")
    _debugger_options(run, paused="with -s or --gdb: do not start the guest, wait for gdb "
                      "to continue it", symbols="the kernel ELF, or for a bzImage an ELF of "
                      "the kernel's own symbols (kallsyms)")
    run.add_argument("--gdb-transcript", metavar="FILE",
                     help="record every packet exchanged with gdb, as JSON Lines (tests)")
    run.add_argument("--record", metavar="FILE", help="record the run to FILE (inputs, "
                     "events, final state) for `dbgvm replay` (docs/trace-format.md)")
    sub.add_parser("guest-path", help="print the bundled guest kernel's path (built if needed)",
                   description="Print the path of the bundled guest kernel (an ELF with "
                   "symbols, for gdb), building it first if needed.")
    replay = sub.add_parser("replay", help="re-execute a recorded run and check it is the same",
                            description="Replay a run recorded with `dbgvm run --record` and "
                            "verify that it gives the same events and final state; with -s, "
                            "--gdb, -x or without --batch, debug it, backwards too.")
    replay.add_argument("file", metavar="FILE", help="the recorded run")
    replay.add_argument("--kernel", metavar="FILE", help="use this kernel file (it must be "
                        "the one the trace recorded: same content hash); needed only for a "
                        "trace of format 1, which does not carry its kernel")
    replay.add_argument("--batch", action="store_true",
                        help="no prompt: verify the replay (or run the -x scripts) and exit")
    _debugger_options(replay, paused="accepted for symmetry: a replay served to gdb starts "
                      "paused", symbols="the trace's kernel, or for a bzImage an ELF of its "
                      "kallsyms")
    replay.add_argument("--snapshot-every", type=int, default=DEFAULT_INTERVAL, metavar="N",
                        help=f"snapshot every N instructions for going backwards (default "
                        f"{DEFAULT_INTERVAL})")
    linux_cli.add_parser(sub)
    return parser


def _debugger_options(parser: argparse.ArgumentParser, *, paused: str, symbols: str) -> None:
    """What `run` and `replay` share: monitor scripts and prompt, and the gdb server (with
    QEMU's -s and -S)."""
    parser.add_argument("-x", dest="scripts", action="append", default=[], metavar="FILE",
                        help="run the monitor commands in FILE (one per line, '#' comments) "
                        "before the prompt; with --batch, run them and exit (repeatable)")
    parser.add_argument("--history", metavar="FILE", help="the prompt's history file "
                        "(default: $XDG_STATE_HOME/dbgvm/history)")
    parser.add_argument("-s", dest="gdb_default", action="store_true",
                        help="serve gdb on 127.0.0.1:1234 (shorthand for --gdb 1234); the "
                        "terminal stays the guest's console meanwhile")
    parser.add_argument("--gdb", metavar="[HOST:]PORT",
                        help="serve gdb on PORT (loopback unless HOST is named)")
    parser.add_argument("-S", dest="paused", action="store_true", help=paused)
    parser.add_argument("--symbols", metavar="FILE",
                        help="the symbol file the gdb stub serves (gdb needs no file argument: "
                        "it loads it through the stub), e.g. a vmlinux with debug information "
                        f"from Debian's linux-image-*-dbg; default: {symbols}")


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("dbgvm")
    except metadata.PackageNotFoundError:
        return "(not installed)"


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


class ConsoleOutput:
    """Guest consoles on stdout: raw with one VM; with several, whole lines prefixed by the
    VM they come from, so that their output never interleaves within a line."""

    def __init__(self, vms: int) -> None:
        self._prefixed = vms > 1
        self._partial: dict[int, bytes] = {}
        self.sink: Callable[[int, bytes], None] | None = None   # the prompt's output pane

    def set_sink(self, sink: Callable[[int, bytes], None] | None) -> None:
        self.sink = sink

    def write(self, vm: int, data: bytes) -> None:
        if self.sink is not None:
            self.sink(vm, data)
            return
        out = sys.stdout.buffer
        if not self._prefixed:
            out.write(data)
        else:
            *lines, self._partial[vm] = (self._partial.get(vm, b"") + data).split(b"\n")
            for line in lines:
                out.write(b"[vm%d] %s\n" % (vm, line))
        out.flush()

    def flush(self) -> None:
        for vm, rest in sorted(self._partial.items()):
            if rest:
                sys.stdout.buffer.write(b"[vm%d] %s\n" % (vm, rest))
        self._partial.clear()
        sys.stdout.buffer.flush()


def _kernel(args: argparse.Namespace) -> str:
    if args.kernel is not None:
        return args.kernel
    if args.kernel_option is not None:
        return args.kernel_option
    from .guest import bundled_kernel
    return str(bundled_kernel())


def gdb_command_line(host: str, port: int, bundled: bool) -> str:
    """The gdb command that attaches to this stub. It names no file: the stub serves the
    guest's executable or symbol file (qXfer:exec-file and vFile, docs/gdb.md). For the
    bundled guest it maps its sources to this checkout (its debug information names them
    /dbgvm-guest-src, the same from every checkout)."""
    import shlex

    from .guest.build import gdb_source_map
    argv = ["gdb"]
    if bundled:
        argv += ["-ex", gdb_source_map()]
    argv += ["-ex", f"target remote {host}:{port}"]
    return shlex.join(argv)


def served_symbols(kernel: str | None, symbols: str | None) -> ServedFile | None:
    """The file the gdb stub serves: ``symbols`` (--symbols) when given; for a Linux kernel
    the vmlinux itself when it has a .symtab, else the ELF dbgvm writes from its kallsyms
    (dbgvm/linux/symbol_elf.py); any other kernel ELF itself. None when there is nothing
    to serve. OSError / ValueError for a --symbols file that cannot be served."""
    from .gdbstub.hostio import ServedFile
    from .linux.boot import is_linux_kernel
    from .linux.symbol_elf import symbol_file
    if symbols is not None:
        with open(symbols, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise ValueError(f"{symbols}: not an ELF file")
        return ServedFile(symbols)
    if kernel is None:
        return None
    path = symbol_file(kernel) if is_linux_kernel(kernel) else Path(kernel)
    if path is None:
        return None
    try:
        return ServedFile(path)
    except OSError:
        return None


def _announce(served: ServedFile | None, host: str, port: int, bundled: bool,
              err: TextIO) -> None:
    print(f"dbgvm: attach with: {gdb_command_line(host, port, bundled)}", file=err)
    if served is not None:
        print(f"dbgvm: gdb gets its symbols from the stub: {served.path}", file=err)
    else:
        print("dbgvm: no symbol file to serve to gdb (give one with --symbols FILE)",
              file=err)


def guest_path_command(args: argparse.Namespace, err: TextIO) -> int:
    from .guest import GuestBuildError, bundled_kernel
    try:
        kernel = bundled_kernel()
    except GuestBuildError as exc:
        print(f"dbgvm: {exc}", file=err)
        return USAGE_ERROR
    print(kernel)
    return 0


def _rtc_base(text: str) -> int:
    """--rtc-base as Unix seconds (ValueError with a one-line message)."""
    if text == "utc":
        return int(time.time())
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--rtc-base: {text!r} is not utc, a date (2006-06-17T16:01:21) "
                         "or Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


def _check_args(args: argparse.Namespace) -> str | None:
    if args.max_insns is not None and args.max_insns <= 0:
        return "--max-insns must be positive"
    if not 1 <= args.vms <= MAX_VMS:
        return f"--vms must be 1..{MAX_VMS}"
    if args.disk_writable and not args.disk:
        return "--disk-writable needs --disk FILE"
    if args.kernel is not None and args.kernel_option is not None:
        return "give the kernel once: KERNEL or -kernel KERNEL"
    if args.symbols is not None and not (args.gdb or args.gdb_default):
        return "--symbols is the file gdb gets from the stub: it needs -s or --gdb"
    if not 2 <= args.m <= MAX_RAM_MB:
        return f"-m: guest RAM must be 2..{MAX_RAM_MB} MiB, not {args.m}"
    if args.disk and os.path.isdir(args.disk):
        return f"--disk: {args.disk} is a directory, not a disk image"
    if args.paused and not (args.gdb or args.gdb_default):
        return ("-S waits for gdb to start the guest: add -s or --gdb PORT (without gdb, "
                "the prompt already starts paused)")
    return _unreadable_script(args.scripts)


def _unreadable_script(scripts: list[str]) -> str | None:
    """-x FILE that cannot be read, said before anything runs."""
    for script in scripts:
        try:
            with open(script, "rb"):
                pass
        except OSError as exc:
            return f"-x: cannot read {script}: {exc.strerror}"
    return None


class OutputFailed(Exception):
    """An output file of the run could not be written (the message is one line)."""


class Outputs:
    """The files a run writes (--trace-out, --pcap, --record): their write errors (a full
    disk, a closed pipe, an unwritable device) become one ``dbgvm:`` line naming the option,
    the file and the cause, and end the run at the next instruction boundary, instead of
    surfacing inside the guest's run as a monitor error or a traceback. After the first
    failure every output is dropped silently: the one line has been said."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self.failure: str | None = None
        self.machines: list = []           # stopped when an output fails during the run
        self._files: list[GuardedFile] = []

    def open(self, option: str, path: str) -> GuardedFile:
        """``path`` opened for writing (OSError as usual when it cannot be opened)."""
        guarded = GuardedFile(self, option, path, open(path, "wb"))
        self._files.append(guarded)
        return guarded

    def failed(self, option: str, path: str, exc: OSError) -> None:
        if self.failure is not None:
            return
        cause = exc.strerror or str(exc)
        self.failure = f"{option}: cannot write {path}: {cause}"
        print(f"dbgvm: {self.failure}", file=self._err, flush=True)
        for machine in self.machines:
            machine.stop_after_current(StopReason.REQUESTED, self.failure)

    def close(self) -> None:
        for guarded in self._files:
            guarded.close()


class GuardedFile(io.RawIOBase):
    """A binary output file whose write errors go to Outputs.failed instead of the caller
    (who may be deep in the guest's run: an event subscriber, the virtual switch)."""

    def __init__(self, outputs: Outputs, option: str, path: str, raw: io.BufferedWriter
                 ) -> None:
        super().__init__()
        self._outputs, self._option, self.name = outputs, option, path
        self._raw: io.BufferedWriter | None = raw

    def writable(self) -> bool:
        return True

    def _fail(self, exc: OSError) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.close()
            except OSError:
                pass            # what it still buffered cannot be written either
        self._outputs.failed(self._option, self.name, exc)

    def write(self, data) -> int:       # type: ignore[override]
        if self._raw is not None:
            try:
                self._raw.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        if self._raw is not None:
            try:
                self._raw.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        if self._raw is not None:
            self.flush()
            raw, self._raw = self._raw, None
            if raw is not None:
                try:
                    raw.close()
                except OSError as exc:
                    self._outputs.failed(self._option, self.name, exc)
        super().close()


class _Interrupt:
    """Ctrl-C during a --batch run: the run stops at the next instruction boundary (so a
    recording ends cleanly, at a point a replay reaches and verifies) instead of a
    KeyboardInterrupt landing anywhere in the emulator."""

    def __init__(self, domains: Domains) -> None:
        self.requested = False
        self._domains = domains
        self._previous = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:                 # a second Ctrl-C: the run does not stop, leave
            raise KeyboardInterrupt
        self.requested = True
        source = self._domains.input
        if source is not None and hasattr(source, "wake"):
            # not from the handler itself: it may have interrupted the source's own lock
            threading.Thread(target=source.wake, daemon=True).start()


def _subscribe_traces(domains: Domains, kinds: frozenset[EventKind], out: TextIO | None,
                      err: TextIO) -> None:
    several = len(domains.domains) > 1
    for index, machine in enumerate(domains.machines):
        prefix = f"vm{index} " if several else ""
        extra = {"vm": index} if several else {}
        if kinds:
            machine.events.subscribe(kinds, lambda e, p=prefix: print(p + e.describe(),
                                                                       file=err))
        if out is not None:
            def write_event(event: Event, out: TextIO = out, extra: dict = extra) -> None:
                out.write(event.to_json(**extra) + "\n")
            machine.events.subscribe(kinds or frozenset(EventKind), write_event)


def run_command(args: argparse.Namespace, err: TextIO) -> int:
    try:
        trace_kinds = parse_kinds(args.trace) if args.trace else frozenset()
    except ValueError as exc:
        print(f"dbgvm: --trace: {exc}", file=err)
        return USAGE_ERROR
    problem = _check_args(args)
    if problem is not None:
        print(f"dbgvm: {problem}", file=err)
        return USAGE_ERROR
    outputs = Outputs(err)
    opened: list = []
    status = USAGE_ERROR
    started = False
    try:
        started, status = _run(args, err, outputs, opened, trace_kinds)
    finally:
        for thing in reversed(opened):
            thing.close()
        outputs.close()
    if outputs.failure is not None:
        return 1 if started else USAGE_ERROR
    return status


def _run(args: argparse.Namespace, err: TextIO, outputs: Outputs, opened: list,
         trace_kinds: frozenset[EventKind]) -> tuple[bool, int]:
    """run_command once the options are checked: (whether the guest started, the exit
    status). What it opens goes on ``opened`` (closed by the caller, last first)."""
    console = ConsoleOutput(args.vms)
    from .guest import GuestBuildError
    try:
        kernel = _kernel(args)
        modules = _modules(args.initrd)
        boot = prepare_boot(kernel, args.append, modules, args.m, args.boot_decompressor)
        rtc_start = _rtc_base(args.rtc_base)
        if boot.banner is not None:
            print(f"dbgvm: {boot.banner}", file=err)
        pcap = PcapWriter(outputs.open("--pcap", args.pcap)) if args.pcap else None
        domains = Domains(boot.image, args.vms, DomainConfig(
            args.m, args.disk, args.disk_writable, board=boot.board, rtc_start=rtc_start,
            syscall_names=boot.syscall_names, panic_points=boot.panic_points),
                          console.write, pcap=pcap, notify=lambda t: print(
                              f"dbgvm: {t}", file=err))
        out = io.TextIOWrapper(outputs.open("--trace-out", args.trace_out),
                               encoding="utf-8") if args.trace_out else None
    except (LoadError, ValueError, DiskError, GuestBuildError) as exc:
        print(f"dbgvm: {exc}", file=err)
        return False, USAGE_ERROR
    except OSError as exc:
        print(f"dbgvm: {exc.filename}: {exc.strerror}", file=err)
        return False, USAGE_ERROR
    except UnicornLayoutError as exc:
        print(f"dbgvm: {exc}", file=err)
        return False, 1
    if out is not None:
        opened.append(out)
    opened.append(domains)
    outputs.machines = domains.machines
    _subscribe_traces(domains, trace_kinds, out, err)
    if args.record:
        try:
            opened.append(_start_recording(args, kernel, modules, domains, outputs))
        except OSError as exc:
            print(f"dbgvm: --record: {exc.filename or args.record}: {exc.strerror}", file=err)
            return False, USAGE_ERROR
        except ValueError as exc:
            print(f"dbgvm: --record: {exc}", file=err)
            return False, USAGE_ERROR
    if outputs.failure is not None:         # an output failed before anything ran
        return False, USAGE_ERROR
    if args.gdb or args.gdb_default:
        return True, _serve_gdb(domains, args, kernel, err)
    if not args.batch:
        return True, _prompt(domains, console, args)
    _attach_stdin(domains)
    if args.scripts:
        return True, _batch_scripts(domains, args.scripts)
    interrupt = _Interrupt(domains)
    try:
        with interrupt:
            stop = domains.run(args.max_insns, interrupted=lambda: interrupt.requested or
                               outputs.failure is not None)
    except KeyboardInterrupt:
        interrupt.requested = True
    else:
        if stop.reason is StopReason.GUEST_PANIC:
            # without a debugger a kernel panic ends the VM (QEMU's -action panic=exit-failure);
            # a recording then says so instead of "cut off"
            domains.domains[getattr(stop, "vm", None) or 0].stop = stop
    console.flush()
    if outputs.failure is not None:
        return True, 1
    if interrupt.requested:
        print("\ndbgvm: interrupted (Ctrl-C)", file=err)
        return True, INTERRUPTED
    _report(stop, domains, err)
    return True, stop.exit_status


class _Recording:
    """Closes the trace when the run is over (the stop of each VM that ended)."""

    def __init__(self, recorder: Recorder, domains: Domains) -> None:
        self._recorder, self._domains = recorder, domains

    def close(self) -> None:
        self._recorder.finish({d.index: d.stop for d in self._domains.domains
                               if d.stop is not None})


MAX_EMBEDDED_DISK = 64 << 20


def _start_recording(args: argparse.Namespace, kernel: str, modules: tuple[Module, ...],
                     domains: Domains, outputs: Outputs) -> _Recording:
    # the trace carries the kernel (compressed): a replay needs nothing but the file
    header: dict = {"kernel": file_entry(kernel, Path(kernel).read_bytes(), embed=True,
                                         compress=True),
                    "append": args.append, "ram_mb": args.m, "vms": args.vms,
                    "network": True, "disk": None, "initrd": [],
                    "boot_decompressor": args.boot_decompressor,
                    "rtc_start": domains.config.rtc_start}
    header["kernel"]["bundled"] = args.kernel is None
    for module in modules:
        header["initrd"].append({**file_entry(module.path, module.data, embed=True),
                                 "spec": module.cmdline})
    if args.disk:
        data = Path(args.disk).read_bytes()
        if len(data) > MAX_EMBEDDED_DISK:
            raise ValueError(f"the disk image is larger than {MAX_EMBEDDED_DISK >> 20} MiB "
                             "(a trace carries the image it started from)")
        header["disk"] = {**file_entry(args.disk, data, embed=True),
                          "writable": args.disk_writable}
    return _Recording(Recorder(outputs.open("--record", args.record), header, domains.machines),
                      domains)


def _monitor(domains: Domains) -> CommandInterpreter:
    """The monitor over these VMs: `continue` runs them all side by side."""
    from .repl.commands import CommandInterpreter
    return CommandInterpreter(run=lambda max_insns, interrupted: domains.run(max_insns,
                                                                 interrupted=interrupted),
                   machines=domains.machines, hal_stats=domains.hal_stats,
                   console_input=domains.console_input)


def _prompt(domains: Domains, console: ConsoleOutput, args: argparse.Namespace) -> int:
    from .repl.app import run_repl
    domains.realtime = True             # a person watches: virtual time keeps to the clock
    return run_repl(_monitor(domains), history_file=_history_file(args),
                    console_sink_setter=console.set_sink, scripts=args.scripts)


def _history_file(args: argparse.Namespace) -> str | None:
    """--history, or $XDG_STATE_HOME/dbgvm/history (none when its directory cannot be made)."""
    history = args.history or str(Path(os.environ.get("XDG_STATE_HOME") or
                                       Path.home() / ".local" / "state") / "dbgvm" / "history")
    try:
        Path(history).parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return history


def _run_scripts(monitor: CommandInterpreter, scripts: list[str]) -> bool:
    """--batch -x: run each script in turn until one fails (False) or says quit."""
    from .repl.app import run_script
    for path in scripts:
        if not run_script(monitor, path, sys.stdout):
            return False
        if monitor.quit_requested:
            break
    return True


def _batch_scripts(domains: Domains, scripts: list[str]) -> int:
    """--batch -x: the scripts drive the VMs; the exit status is VM 0's if it ended, 1 when
    a command failed, else 0."""
    monitor = _monitor(domains)
    if not _run_scripts(monitor, scripts):
        return 1
    stop = monitor.vms[0].last_stop
    return stop.exit_status if stop is not None else 0


def _attach_stdin(domains: Domains) -> None:
    from .console_input import StdinSource
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (OSError, ValueError, AttributeError):
        return
    domains.input = StdinSource(fd, len(domains.domains))
    domains.realtime = os.isatty(fd)


def _discard_typed_input() -> None:
    """At exit: what was typed at the terminal and not yet read (a line without its Enter)
    goes nowhere, never to the shell that started dbgvm (where a typed `rm` would run)."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd):
            import termios
            termios.tcflush(fd, termios.TCIFLUSH)
    except (OSError, ValueError, AttributeError, ImportError):
        pass


def _report(stop: Stop, domains: Domains, err: TextIO) -> None:
    sys.stdout.flush()
    if stop.reason not in _QUIET_STOPS:
        print(f"dbgvm: {stop.reason.value}: {stop.message}", file=err)
    for domain in domains.domains:
        # a guest probing for a device it was not given (NOCHAN) is not worth a word
        refused = {k: v for k, v in domain.hal.stats.refused.items() if k != "NOCHAN"}
        forged = domains.switch.forged[domain.index]
        if refused or forged:
            detail = ", ".join(f"{k} {v}" for k, v in sorted(refused.items()))
            print(f"dbgvm: vm{domain.index}: {sum(refused.values())} bad HAL packets refused"
                  f"{f' ({detail})' if detail else ''}, {forged} forged frames dropped",
                  file=err)


def _served(kernel: str | None, symbols: str | None):
    """served_symbols, every problem with the file as a ValueError of one line."""
    try:
        return served_symbols(kernel, symbols)
    except OSError as exc:
        raise ValueError(f"{exc.filename}: {exc.strerror}") from None


def _serve_gdb(domains: Domains, args: argparse.Namespace, kernel: str, err: TextIO) -> int:
    """Run (or, with -S, wait) until gdb attaches, then serve debuggers until one kills the
    VM; the guest runs only when gdb continues it."""
    from .gdbstub.server import GdbServer, parse_address
    from .gdbstub.transcript import Transcript

    machine = domains.machines[0]
    try:
        served = _served(kernel, args.symbols)
    except ValueError as exc:
        print(f"dbgvm: --symbols: {exc}", file=err)
        return USAGE_ERROR
    try:
        address = parse_address(args.gdb or "1234")
        server = GdbServer(machine, address, monitor=_monitor(domains).run,
                           log=lambda text: print(text, file=err), run=domains.run,
                           exec_file=served)
    except (ValueError, OSError) as exc:
        print(f"dbgvm: --gdb: {exc}", file=err)
        return USAGE_ERROR
    if args.gdb_transcript:
        server.transcript = Transcript(args.gdb_transcript)
    host, port = server.address
    print(f"dbgvm: waiting for gdb on {host}:{port}", file=err)
    _announce(served, host, port, args.kernel is None and args.kernel_option is None, err)
    # the terminal stays the guest's console beside gdb, as QEMU's serial console does
    _attach_stdin(domains)
    try:
        return _run_for_gdb(domains, server, args, err)
    finally:
        _discard_typed_input()


def _run_for_gdb(domains: Domains, server, args: argparse.Namespace, err: TextIO) -> int:
    if not args.paused:
        import select

        def gdb_arrived() -> bool:
            return bool(select.select([server.listener], [], [], 0)[0])
        stop = domains.run(args.max_insns, interrupted=gdb_arrived)
        if stop.reason is not StopReason.REQUESTED:
            _report(stop, domains, err)
            return stop.exit_status
    return server.serve()


def replay_command(args: argparse.Namespace, err: TextIO) -> int:
    problem = _unreadable_script(args.scripts)
    if problem is not None:
        print(f"dbgvm: {problem}", file=err)
        return USAGE_ERROR
    try:
        trace = read_trace(args.file)
        vms = trace.header.get("vms", 1)
        console = ConsoleOutput(vms)
        # going back re-executes history: what VM 0 printed is not printed again
        seen = SeenOutput(console.write)
        replay = Replay(trace, seen.write, kernel=args.kernel)
    except (TraceError, LoadError, DiskError, KeyError, TypeError, ValueError) as exc:
        print(f"dbgvm: {exc}", file=err)
        return USAGE_ERROR
    try:
        if not (args.gdb or args.gdb_default or args.scripts or not args.batch):
            problems = replay.run_and_verify()
            console.flush()
            for problem in problems:
                print(f"dbgvm: {problem if isinstance(problem, str) else problem.describe()}",
                      file=err)
            if problems:
                return 1
            ends = trace.ends
            print("dbgvm: replay identical to the recording: " + "; ".join(
                f"vm{vm} {ends[vm].events} events, icount {ends[vm].icount}, {ends[vm].reason}"
                for vm in sorted(ends)), file=err)
            return 0
        return _debug_replay(replay, console, seen, args, err)
    finally:
        replay.close()


def _debug_replay(replay: Replay, console: ConsoleOutput, seen: SeenOutput,
                  args: argparse.Namespace, err: TextIO) -> int:
    """VM 0 of the replay under the monitor and/or gdb, forwards and backwards."""
    from .repl.commands import CommandInterpreter
    machine = replay.domains.machines[0]
    verifier = replay.verifiers[0]

    def going_back() -> None:
        if verifier.enabled:
            verifier.enabled = False
            print("dbgvm: going back in time: the replay is no longer checked against the "
                  "recording", file=err)
    end = replay.trace.ends[0]
    engine = ReverseEngine(machine, end.icount, args.snapshot_every, going_back, console=seen,
                           recorded_end=f"{end.reason}: {end.message}")
    monitor = CommandInterpreter(run=lambda max_insns, interrupted: engine.run(max_insns,
                                                                    interrupted=interrupted),
                      machines=[machine], reverse=engine)
    if args.gdb or args.gdb_default:
        from .gdbstub.server import GdbServer, parse_address
        try:
            kernel = str(Path(args.kernel or _replay_kernel_file(replay)).resolve())
        except OSError:
            kernel = None           # no symbols then: the cache cannot be written
        try:
            served = _served(kernel, args.symbols)
        except ValueError as exc:
            print(f"dbgvm: --symbols: {exc}", file=err)
            return USAGE_ERROR
        try:
            server = GdbServer(machine, parse_address(args.gdb or "1234"), monitor=monitor.run,
                               log=lambda text: print(text, file=err), run=engine.run,
                               reverse=engine, exec_file=served)
        except (ValueError, OSError) as exc:
            print(f"dbgvm: --gdb: {exc}", file=err)
            return USAGE_ERROR
        host, port = server.address
        print(f"dbgvm: replaying {args.file}; waiting for gdb on {host}:{port}", file=err)
        _announce(served, host, port, bool(replay.trace.header["kernel"].get("bundled")), err)
        return server.serve()
    if args.batch:
        return 0 if _run_scripts(monitor, args.scripts) else 1
    from .repl.app import run_repl
    return run_repl(monitor, history_file=_history_file(args),
                    console_sink_setter=console.set_sink, scripts=args.scripts)


def _replay_kernel_file(replay: Replay) -> str:
    """A file holding the replayed kernel, for gdb's symbols: the trace's kernel, written once
    to the cache under its content hash."""
    import hashlib
    import tempfile
    digest = hashlib.sha256(replay.kernel).hexdigest()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "dbgvm" / "trace-kernels" / digest[:20] / \
        Path(replay.trace.header["kernel"]["path"]).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(replay.kernel)
        os.replace(tmp.name, path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"run": run_command, "replay": replay_command, "guest-path": guest_path_command,
                "linux": linux_cli.linux_command}
    if args.command not in commands:
        return USAGE_ERROR
    try:
        return commands[args.command](args, sys.stderr)
    except BrokenPipeError:
        # the reader of our output went away (`| head`): end quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
