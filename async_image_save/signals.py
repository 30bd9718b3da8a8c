"""Signals sent by async_image_save, each at most once per job.

Every terminal state change is a compare-and-set UPDATE on the job row; a signal
is sent only by the worker whose UPDATE changed the row, so redelivered messages
do not send it twice.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("async_image_save")

# Sent after the upload is stored and the model field saved.
# kwargs: sender (the model class), job (ImageJob), instance, field_name, name (stored name)
image_saved = Signal()

# Sent after every thumbnail spec of the field has been generated and recorded.
# kwargs: sender (the model class), job (ImageJob), thumbnails (list of Thumbnail rows)
thumbnails_ready = Signal()

# Sent when a job ends failed.
# kwargs: sender (ImageJob), job (ImageJob), code (str), error (str)
image_failed = Signal()


def send_robust(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal``; a receiver that raises is logged and cannot break the pipeline."""
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error("async_image_save: signal receiver %r raised", receiver, exc_info=result)
