"""``python -m dbgvm.repl KERNEL [-x FILE]... [--history FILE]``: the prompt on one kernel.

A small launcher of the REPL alone (the ``dbgvm run`` command wires the same entry point with
all its options); the tmux test drives it in a real terminal.
"""
from __future__ import annotations

import argparse
import sys

from ..core.loader import LoadError, load
from ..core.machine import Machine
from .app import ConsoleSink, run_repl
from .commands import Monitor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbgvm.repl")
    parser.add_argument("kernel")
    parser.add_argument("-x", dest="scripts", action="append", default=[])
    parser.add_argument("--history")
    args = parser.parse_args(argv)
    sink: list[ConsoleSink | None] = [None]

    def console(data: bytes) -> None:
        if sink[0] is not None:
            sink[0](0, data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    machine = Machine(console=console)
    try:
        machine.load(load(args.kernel, machine.ram_size))
    except (LoadError, OSError) as exc:
        print(f"dbgvm: {exc}", file=sys.stderr)
        return 2
    return run_repl(Monitor(machine), history_file=args.history, scripts=args.scripts,
                    console_sink_setter=lambda s: sink.__setitem__(0, s))


if __name__ == "__main__":
    sys.exit(main())
