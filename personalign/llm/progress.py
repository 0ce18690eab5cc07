"""The progress bar the generation backends share (on stderr, gone when done; plain lines off a terminal)."""
from __future__ import annotations

from personalign.progress import WorkProgress, work_progress


def progress_bar(enabled: bool, total: int) -> WorkProgress:
    """The standard progress bar (`personalign.progress`); a no-op when disabled or when there is nothing to do."""
    return work_progress(enabled=enabled and total > 0)
