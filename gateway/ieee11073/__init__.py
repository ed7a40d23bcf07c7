"""Pure IEEE 11073 / Bluetooth GATT codecs: bytes in, typed values and measurements out.

Importing this package imports every codec module in it, which registers each codec in
:mod:`gateway.ieee11073.registry` (one module per service: adding a service is adding a module).
"""

import importlib
import pkgutil

from gateway.ieee11073.registry import codec_for, codecs, decode

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["codec_for", "codecs", "decode"]
