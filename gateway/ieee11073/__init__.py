"""Pure IEEE 11073 / Bluetooth GATT codecs: bytes in, typed values and measurements out.

Importing this package imports every codec module in it and in its subpackages (such as
:mod:`gateway.ieee11073.ghs`), which registers each codec in :mod:`gateway.ieee11073.registry`
(one module or subpackage per service: adding a service is adding a module). Names starting with
``_`` are helpers and are not walked.
"""

import importlib
import pkgutil

from gateway.ieee11073.registry import codec_for, codecs, decode

for _module in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
    if not any(part.startswith("_") for part in _module.name.split(".")[2:]):
        importlib.import_module(_module.name)

__all__ = ["codec_for", "codecs", "decode"]
