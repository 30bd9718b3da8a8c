"""The errors a worker step raises when trying again later may succeed.

``tasks.py`` turns both into Celery retries. They live apart from
``processing.py`` (which re-exports them) so that the modules the worker steps
are built from (``job_input.py``, ``committing.py``) can raise
:class:`StorageFailure` without importing the orchestration.
"""

from __future__ import annotations


class StorageFailure(Exception):
    """The storage (or database) failed in a way worth retrying."""

    def __init__(self, job_id: str, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.job_id, self.cause = job_id, cause


class JobBusy(Exception):
    """Another worker holds the job's lease (a duplicate or early redelivery)."""

    def __init__(self, job_id: str, retry_in: float) -> None:
        super().__init__(f"job {job_id} is being processed by another worker")
        self.job_id, self.retry_in = job_id, retry_in
