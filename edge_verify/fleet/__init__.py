"""The fleet: a central PostgreSQL (the centre), an enrolment authority that signs every template
revision and encrypts it to each kiosk's own key, kiosks that sync into their local store and keep
deciding from it when the centre is down, and MQTT events for Home Assistant.

An optional wing (``pip install 'edge-verify[fleet]'``: psycopg 3, paho-mqtt 2): the device core never
imports it, and its modules import psycopg and paho only where they use them.
"""

from __future__ import annotations

from edge_verify.errors import FleetError

__all__ = ["FleetError", "first_line", "require"]


def require(module: str):
    """Import psycopg or paho.mqtt.client, or say how to install the fleet extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FleetError(f"the fleet needs {module.split('.')[0]}: pip install 'edge-verify[fleet]'") from None


def first_line(exc: BaseException) -> str:
    """The first line of a driver's error message (psycopg's run over several), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
