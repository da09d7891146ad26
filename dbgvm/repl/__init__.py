"""The monitor: lark command language and prompt_toolkit REPL. Issue 6."""
