"""Packline's public message catalogue: what other services publish to Packline and read from it.

This package depends on pydantic only, never on Packline's services. Start with
``packline_contracts.registry`` (every message type) and ``packline_contracts.envelope``
(how a message travels on Kafka).
"""

__version__ = "0.1.0"
