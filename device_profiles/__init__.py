"""The device profiles (one TOML file per sensor kind), installed as ``gateway.device_profiles``.

This file only makes the folder a package, so that its TOML files ship as package data.
"""
