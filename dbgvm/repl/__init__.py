"""The monitor: lark command language and prompt_toolkit REPL. See docs/monitor.md."""
