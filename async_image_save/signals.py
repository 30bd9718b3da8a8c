"""Signals sent by async_image_save, each at most once per job.

Every terminal state change is a compare-and-set UPDATE on the job row; a signal
is sent only by the worker whose UPDATE changed the row, so redelivered messages
do not send it twice.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent after the upload is stored and the model field saved.
# kwargs: sender (the model class), job (ImageJob), instance, field_name, name (stored name)
image_saved = Signal()

# Sent after every thumbnail spec of the field has been generated and recorded.
# kwargs: sender (the model class), job (ImageJob), thumbnails (list of Thumbnail rows)
thumbnails_ready = Signal()

# Sent when a job ends failed.
# kwargs: sender (ImageJob), job (ImageJob), code (str), error (str)
image_failed = Signal()
