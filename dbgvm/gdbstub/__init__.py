"""The GDB remote-serial stub: framing, packet handlers, target description. See docs/gdb.md."""
