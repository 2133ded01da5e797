"""What an instance id may be, checked the same way for every backend.

Without one rule each backend had its own: a NUL byte or a million-character id was
stored by SQLite and refused deep inside PostgreSQL (whose ``text`` cannot hold NUL, and
whose NOTIFY payload, the id, must stay under 8000 bytes); a lone surrogate gave a raw
``UnicodeEncodeError``. The limit, 255 characters, keeps every id a valid PostgreSQL
index key and NOTIFY payload (at most 1020 bytes in UTF-8) and readable in a log line.
"""

from __future__ import annotations

from typing import Any

MAX_INSTANCE_ID_LENGTH = 255
"""The longest instance id accepted, in characters."""


def validate_instance_id(instance_id: Any) -> str:
    """Return ``instance_id`` if every backend can store it, else raise naming the problem.

    An instance id is a non-empty ``str`` of at most ``MAX_INSTANCE_ID_LENGTH``
    characters, encodable as UTF-8 (no lone surrogates) and without NUL characters.
    ``TypeError`` for a non-string, ``ValueError`` for a string that breaks a rule.
    """
    if not isinstance(instance_id, str):
        raise TypeError(f"instance_id must be a str, got {type(instance_id).__name__}")
    if not instance_id:
        raise ValueError("instance_id must be a non-empty string")
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        raise ValueError(
            f"instance_id is {len(instance_id)} characters long; the limit is "
            f"{MAX_INSTANCE_ID_LENGTH} (use a short id, a hash of a long key for instance)"
        )
    if "\x00" in instance_id:
        raise ValueError(f"instance_id must not contain NUL characters, got {instance_id!r}")
    try:
        instance_id.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"instance_id must be valid Unicode text (it has a lone surrogate at position "
            f"{error.start}), got {instance_id!r}"
        ) from None
    return instance_id
