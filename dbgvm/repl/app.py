"""The interactive prompt (prompt_toolkit) and ``-x`` scripts over a CommandInterpreter.

The prompt stays live while the guest runs: a command that runs guest code (``continue``,
``step``) runs in a background thread, its output, the guest console and traced events are
printed above the prompt, and Ctrl-C (or ``stop``) sets the flag the run loop polls. Only one
thread drives Unicorn at a time: while the background run is going, the prompt thread runs
nothing but the commands that never touch a Machine (stop, help, send, quit); anything else is
refused with an error line. Ctrl-C never quits; Ctrl-D or ``quit`` does.

Entry points for the CLI: :func:`run_repl` (the prompt, after optional scripts) and
:func:`run_script` (``-x FILE`` in ``--batch`` mode).
"""
from __future__ import annotations

import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout

from .commands import Command, CommandInterpreter
from .completion import STYLE, MonitorCompleter, MonitorLexer
from .errors import CommandError, Problem, fail
from .parser import parse

ConsoleSink = Callable[[int, bytes], None]
PARTIAL_FLUSH_SECONDS = 0.2


class ConsoleLines:
    """Guest console bytes -> whole lines for the output area (a prompt cannot share a line
    with guest text). A partial line is shown after a short pause or when the run ends."""

    def __init__(self, write: Callable[[str], None], prefixed: Callable[[], bool]) -> None:
        self._write = write
        self._prefixed = prefixed
        self._pending: dict[int, str] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def feed(self, vm: int, data: bytes) -> None:
        with self._lock:
            text = self._pending.get(vm, "") + data.decode("utf-8", "replace")
            complete, _, rest = text.rpartition("\n")
            self._pending[vm] = rest
            if complete or text.endswith("\n"):
                self._emit(vm, complete + "\n")
            if rest and self._timer is None:
                self._timer = threading.Timer(PARTIAL_FLUSH_SECONDS, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            self._timer = None
            for vm, rest in list(self._pending.items()):
                if rest:
                    self._emit(vm, rest + "\n")
                    self._pending[vm] = ""

    def _emit(self, vm: int, text: str) -> None:
        if self._prefixed():
            text = "".join(f"[vm{vm}] {line}\n" for line in text.splitlines())
        self._write(text)


class Repl:
    """One prompt session over a monitor. ``write`` prints above the prompt (default: the
    terminal, through prompt_toolkit's stdout proxy); tests pass their own."""

    def __init__(self, monitor: CommandInterpreter, *, history_file: str | Path | None = None,
                 input: Input | None = None, output: Output | None = None,
                 write: Callable[[str], None] | None = None) -> None:
        self.monitor = monitor
        self._own_write = write
        self._input = input
        self._output = output
        history: History = FileHistory(str(history_file)) if history_file else \
            InMemoryHistory()
        self._history = history
        self.console = ConsoleLines(self.write, lambda: len(monitor.vms) > 1)
        self._worker: threading.Thread | None = None
        self._failed = False
        self._session: PromptSession | None = None
        monitor.notify = self.write

    # -- output ---------------------------------------------------------------------------
    def write(self, text: str) -> None:
        """Print above the prompt; safe from any thread."""
        if not text:
            return
        if self._own_write is not None:
            self._own_write(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    def console_sink(self, vm: int, data: bytes) -> None:
        """Guest console output of VM ``vm`` (any thread)."""
        self.console.feed(vm, data)

    # -- commands -------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def handle(self, line: str, *, wait: bool = False, where: str = "") -> bool:
        """Run one line; False when it failed. Commands that run the guest go to the
        background unless ``wait``. ``where`` prefixes error lines (``FILE:LINE: ``)."""
        try:
            command = parse(line)
            if command is None:
                return True
            if command.while_running:
                self.write(self.monitor.execute(command))
                return True
            if self.busy:
                raise fail(Problem.BUSY)
            if command.runs_guest:
                self._start(command, line, where)
                if wait:
                    self.wait()
                    return not self._failed
                return True
            self.write(self.monitor.execute(command))
            return True
        except CommandError as exc:
            self.write(exc.render(line, prefix=where))
            return False

    def _start(self, command: Command, line: str, where: str) -> None:
        self._failed = False

        def work() -> None:
            try:
                text = self.monitor.execute(command)
            except CommandError as exc:
                self._failed = True
                text = exc.render(line, prefix=where)
            self.console.flush()
            self.write(text)
            if self._session is not None and self._session.app.is_running:
                self._session.app.invalidate()
        self._worker = threading.Thread(target=work, name="dbgvm-guest", daemon=True)
        self._worker.start()

    def wait(self) -> None:
        """Wait for the background run; Ctrl-C stops the guest instead of this program."""
        while self._worker is not None and self._worker.is_alive():
            try:
                self._worker.join(0.05)
            except KeyboardInterrupt:
                self.monitor.request_stop()

    def run_script(self, path: str | Path) -> bool:
        """Run a command file here (one command per line, # comments); stop at its first
        error, naming the file and line."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            self.write(f"dbgvm: -x: cannot read {path}: {exc.strerror}\n")
            return False
        for number, line in enumerate(lines, 1):
            where = f"{path}:{number}: "
            try:
                command = parse(line)
            except CommandError as exc:
                self.write(exc.render(line, prefix=where))
                return False
            if command is None:
                continue
            self.write(f"({Path(path).name}:{number}) {line.strip()}\n")
            if not self.handle(line, wait=True, where=where):
                return False
            if self.monitor.quit_requested:
                break
        return True

    # -- the prompt -------------------------------------------------------------------------
    def toolbar(self) -> str:
        mon = self.monitor
        status = mon.status
        vm = f"vm {status.vm}/{status.vms}"
        if mon.running:
            return f" {vm} | running | icount {mon.machine.icount} | Ctrl-C stops "
        state = "ended" if status.ended else "paused"
        stop = f" | stop: {status.stop}" if status.stop else ""
        # the whole bar on one terminal line: a long symbol goes first, then the stop reason
        for eip, why in ((mon.vm.symbols.address(status.eip), stop), (f"{status.eip:#010x}", stop),
                         (f"{status.eip:#010x}", "")):
            bar = (f" {vm} | {state} | eip {eip} | cpl {status.cpl} | vif {int(status.vif)} | "
                   f"icount {status.icount}{why} ")
            if len(bar) <= self._columns():
                break
        return bar

    def _columns(self) -> int:
        """The terminal's width (80 without a terminal)."""
        try:
            return (self._session.output if self._session else self._output).get_size().columns
        except (AttributeError, OSError):
            return shutil.get_terminal_size((80, 24)).columns

    def _prompt_session(self) -> PromptSession:
        return PromptSession(history=self._history, completer=MonitorCompleter(self.monitor),
                             lexer=MonitorLexer(self.monitor), style=STYLE,
                             bottom_toolbar=self.toolbar, refresh_interval=0.5,
                             complete_while_typing=False, input=self._input,
                             output=self._output)

    def loop(self) -> None:
        """Prompt until ``quit`` or end of input."""
        session = self._session = self._prompt_session()
        while not self.monitor.quit_requested:
            try:
                line = session.prompt("(dbgvm) ")
            except KeyboardInterrupt:
                if self.busy:
                    self.monitor.request_stop()
                continue
            except EOFError:
                break
            self.handle(line)
        if self.busy:
            self.monitor.request_stop()
            self.wait()
        self.console.flush()


def _exit_status(monitor: CommandInterpreter) -> int:
    stop = monitor.vms[0].last_stop
    return stop.exit_status if stop is not None else 0


def run_repl(monitor: CommandInterpreter, *, history_file: str | Path | None = None,
             console_sink_setter: Callable[[ConsoleSink | None], None] | None = None,
             scripts: Sequence[str | Path] = (), input: Input | None = None,
             output: Output | None = None, write: Callable[[str], None] | None = None) -> int:
    """Run ``scripts`` (-x files, in order; a failing one ends only itself), then the prompt
    until ``quit`` or Ctrl-D. While it runs, guest console output should go to the sink that
    ``console_sink_setter`` receives (``sink(vm, data)``, callable from any thread); it is
    given None at the end. Returns VM 0's last exit status (0 if it never stopped)."""
    repl = Repl(monitor, history_file=history_file, input=input, output=output, write=write)
    patch = patch_stdout(raw=True) if write is None and input is None else nullcontext()
    with patch:
        if console_sink_setter is not None:
            console_sink_setter(repl.console_sink)
        try:
            for script in scripts:
                repl.run_script(script)
                if monitor.quit_requested:
                    break
            if not monitor.quit_requested:
                repl.loop()
        finally:
            if console_sink_setter is not None:
                console_sink_setter(None)
            monitor.notify = None
    return _exit_status(monitor)


@contextmanager
def _sigint_stops(monitor: CommandInterpreter):
    """In the main thread, Ctrl-C during a batch script stops the guest, not the program."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: monitor.request_stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_script(monitor: CommandInterpreter, path: str | Path, out: TextIO) -> bool:
    """``-x FILE`` in --batch mode: run the file's commands here, printing to ``out``; stop
    at the first failing command (``FILE:LINE: error: ...``) or at ``quit``. True when every
    command ran."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        out.write(f"dbgvm: -x: cannot read {path}: {exc.strerror}\n")
        return False
    with _sigint_stops(monitor):
        return run_lines(monitor, lines, out, str(path))


def run_lines(monitor: CommandInterpreter, lines: Iterable[str], out: TextIO, name: str) -> bool:
    for number, line in enumerate(lines, 1):
        try:
            command = parse(line)
            if command is None:
                continue
            out.write(monitor.execute(command))
        except CommandError as exc:
            out.write(exc.render(line, prefix=f"{name}:{number}: "))
            out.flush()
            return False
        out.flush()
        if monitor.quit_requested:
            break
    return True
