"""The PC devices a stock Linux kernel expects (COM1, CMOS RTC, i8042, ACPI power
management), each a device on the machine's port bus, and the board that attaches them."""
