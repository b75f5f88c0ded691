"""rotator: rotates Momento API keys before they expire."""

from __future__ import annotations

__version__ = "0.1.0"
