"""Proxies of a researcher's own, installed under the `memprox.proxies` entry point (docs/extending.md)."""
