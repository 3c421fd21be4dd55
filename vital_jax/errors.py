"""The one base of user-facing errors.

Every error a user can cause (a bad file, record, config key, tensor, setting, or a resource the
settings exceed) derives from :class:`VitalError` as well as from the built-in type it always had
(``ValueError``, ``OSError``, ...), so existing ``except ValueError`` code keeps working. Its
message names what is wrong; ``vital`` prints it as one line and exits with status 2 instead of a
traceback, and library callers can catch this one type.
"""

from __future__ import annotations


class VitalError(Exception):
    """Base of user-facing errors (see the module docstring)."""


__all__ = ["VitalError"]
