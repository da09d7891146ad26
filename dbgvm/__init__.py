"""dbgvm: a debugger-oriented x86 virtual machine (see README.md)."""
