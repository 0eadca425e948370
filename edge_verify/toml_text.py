"""Values written as TOML text (the standard library reads TOML, it does not write it)."""

from __future__ import annotations


def toml_value(value) -> str:
    """``value`` (a string, bool, number or list of them) as TOML: strings as basic strings with
    TOML's own escapes (JSON's would split an emoji into surrogates; a control character would end the line)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        escaped = "".join(
            "\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in value
        )
        return f'"{escaped}"'
    return repr(value)
