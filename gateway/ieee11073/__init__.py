"""Pure IEEE 11073 / Bluetooth GATT codecs: bytes in, typed values and measurements out.

Importing this package registers every codec in :mod:`gateway.ieee11073.registry`.
"""

from gateway.ieee11073 import hrs  # noqa: F401  (registers codecs)
from gateway.ieee11073.registry import codec_for, codecs, decode

__all__ = ["codec_for", "codecs", "decode"]
