"""The HAL: hypercall ABI, packet validation and host devices (console, block, net).

See docs/hal.md."""
