"""Out-of-process plugins: the CircusPlugin API and the bundled plugins; they only speak the wire."""

from circus_linux.plugins.base import CircusPlugin, Frame

__all__ = ["CircusPlugin", "Frame"]
