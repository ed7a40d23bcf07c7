"""Bluetooth LE edge: discovery, per-device sessions, and the bleak backend over Bumble.

The gateway talks to sensors through bleak's public API only; which stack carries it (BlueZ, or a
Bumble host on an HCI transport) is chosen by :func:`gateway.ble.transport.open_link`.
"""
