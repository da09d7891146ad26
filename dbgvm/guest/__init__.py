"""Sources of the bundled VM-friendly guest kernel and its HAL drivers. Issue 4."""
