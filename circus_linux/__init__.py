"""circus-linux: a Linux-native process and socket supervisor, compatible with Circus configs and clients."""

__version__ = "0.1.0"
