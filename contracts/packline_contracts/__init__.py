"""Packline's public message catalogue: what other services publish to Packline and read from it.

This package depends on pydantic only, never on Packline's services.
"""
