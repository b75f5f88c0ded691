"""Reload targets: make consumers that read the key only at start load a new one."""
