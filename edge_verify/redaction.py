"""Keeping secrets out of what is printed, logged, audited or handed to child processes."""

from __future__ import annotations

import os
import re

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
_SECRET_PARAMETERS = re.compile(r"(?i)([?&;](?:[a-z_]*(?:token|password|passwd|pwd|secret|key|auth)[a-z_]*)=)[^&;#\s]*")


def redact_url(text: str) -> str:
    """``text`` with URL credentials (``user:password@``) and secret query values (token=, key=,
    password=...) replaced by ``***``: what may be logged, printed or audited about a source."""
    return _SECRET_PARAMETERS.sub(r"\1***", _URL_CREDENTIALS.sub(r"\1***@", text))


# The only variables of the kiosk's environment a hook command inherits (never $EDGE_VERIFY_KEY).
CHILD_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR")


def child_environment(**extra: str) -> dict[str, str]:
    """Environment for a hook command: the allow-listed variables plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in CHILD_ENVIRONMENT}
    env.update(extra)
    return env
