"""The model manifest, installed as ``gateway.models``; GGUF files placed here are never shipped.

This file only makes the folder a package, so that ``manifest.toml`` ships as package data.
"""
