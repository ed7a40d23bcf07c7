"""The project's one exception root and its branches.

Every error a user can cause names the input and what was expected. Callers match on the class,
never on the message text.
"""

from __future__ import annotations


class BedsideError(Exception):
    """Root of every error the gateway raises on purpose."""


class DecodeError(BedsideError, ValueError):
    """Bytes from a sensor that do not follow the characteristic's layout.

    ``characteristic`` names the characteristic (for example ``"Blood Pressure Measurement
    (0x2A35)"``), ``offset`` is the byte offset where the problem was found and ``expected`` says
    what should have been there.
    """

    def __init__(self, characteristic: str, offset: int, expected: str) -> None:
        self.characteristic = characteristic
        self.offset = offset
        self.expected = expected
        super().__init__(f"{characteristic}: at byte {offset}: expected {expected}")


class UnknownCharacteristicError(BedsideError, LookupError):
    """A characteristic UUID the gateway has no codec for."""

    def __init__(self, uuid: int, known: tuple[int, ...] = ()) -> None:
        self.uuid = uuid
        listing = ", ".join(f"{k:04X}" for k in sorted(known)) or "none"
        super().__init__(f"no codec for characteristic 0x{uuid:04X}; known: {listing}")


class ProfileError(BedsideError, ValueError):
    """A device profile file that does not validate."""


class ConfigError(BedsideError, ValueError):
    """A configuration file or setting that does not validate."""
