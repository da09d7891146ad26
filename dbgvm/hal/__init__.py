"""The HAL: hypercall ABI, packet validation and host devices (console, block, net). Issue 4."""
