"""A bleak backend implemented over the Bumble Bluetooth host stack (see
:mod:`gateway.ble.bumble_backend` for the gateway-facing surface)."""
