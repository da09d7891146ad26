"""The GDB remote-serial stub: framing, packet handlers, target description. Issue 5."""
