"""A job folder held only a moment by another command, which a run with nothing to do in it waits for instead of
refusing: another run finishing that job (it too found nothing to do: `refresh` names itself "run idle" in the
owner file) or checking it (`refuse_if_held`, naming itself nowhere). Two runs with nothing to do started at once
then both finish; a run writing items (or a prune) there still refuses at once, and so does a brief holder that
has not let go within BRIEF_HOLD_WAIT_S."""

from __future__ import annotations

import time
from pathlib import Path

from . import job_files
from .folder_lock import OWNER_NAME, running

IDLE = "idle"  # the owner file's third word where the holder only finishes a job with nothing to do
BRIEF_HOLD_WAIT_S = 5.0  # how long a run waits for such a holder to let go before it refuses
_POLL_S = 0.05


def held_briefly(state: Path) -> bool:
    """The folder's holder, as its owner file (in `state`) says, is finishing an idle job or names no running
    process (a check, a dry run, or a holder that has not written its owner file yet)."""
    try:
        words = job_files.read_bytes(state / OWNER_NAME)[:64].decode("ascii").split()
    except (OSError, UnicodeDecodeError):
        return True
    pid = int(words[0]) if words and words[0].isdigit() and len(words[0]) < 10 else 0
    return not running(pid) or words[2:3] == [IDLE]


def wait_for_brief_holder(state: Path, free) -> bool:
    """Wait while the folder's holder is a brief one (`held_briefly`) and `free()` (one more try at the lock) says
    it is still held, at most BRIEF_HOLD_WAIT_S; True once `free()` does, False where the holder is no brief one or
    has not let go in time."""
    deadline = time.monotonic() + BRIEF_HOLD_WAIT_S
    while held_briefly(state) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        if free():
            return True
    return False
