"""Feature-flag events: an operator changed a flag (``coderunner flag set``).

Published on ``coderunner.v1.flags.<flag>.changed`` (stream FLAGS, kept without an age limit): the
audit trail of who changed what, when and from where. The last event of each flag carries its
current value, which is how runners (which are never given a database URL) read the flags; the
gateway and the grading consumer read them from Redis and re-read at once when an event arrives.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec import Struct


class FlagChanged(Struct, frozen=True, kw_only=True, tag="flag.changed", tag_field="type", rename="camel"):
    """A feature flag was set: its value before and after, who set it and where."""

    flag: str
    # Values as ``coderunner flag list`` shows them: "on" / "off" for a switch, a percentage ("25")
    # for a share. ``old`` is the value in force before (the flag's default when it was never set).
    old: str
    new: str
    changed_at: datetime
    # Who: the operator's login name (or --by); where: the machine the command ran on.
    changed_by: str
    host: str
    # Why, in the operator's words (--reason); may be empty.
    reason: str = ""
    # One id per change: the dedup key of a retried publish.
    change_id: str
    v: int = 1


FlagEvent = FlagChanged
"""The union of everything on the FLAGS stream (one member so far)."""

flag_event_decoder: msgspec.json.Decoder[FlagChanged] = msgspec.json.Decoder(FlagChanged)
