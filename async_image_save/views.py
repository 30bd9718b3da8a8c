"""The job status endpoint a page polls: ``GET jobs/<uuid>/`` -> JSON.

A job is shown to its owner, to staff, and to the browser session that
started it (for anonymous uploads, see :func:`remember_job`). Anyone else gets
404, not 403, so job ids cannot be probed.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.generic.edit import CreateView, UpdateView

from async_image_save.models import ImageJob, Thumbnail
from async_image_save.specs import specs_for

SESSION_KEY = "async_image_save_jobs"
GENERIC_ERROR = "The image could not be processed."
_TOKEN_SALT = "async_image_save.views.job_token"
#: How many job ids a session remembers (the oldest are forgotten first).
SESSION_MAX_JOBS = 200


def remember_job(request: HttpRequest, job: ImageJob) -> None:
    """Let this browser session poll ``job`` even when the user is anonymous.

    The session key is written on the job row itself, so parallel uploads from one
    browser cannot lose each other's jobs the way concurrent session saves would.
    """
    session = getattr(request, "session", None)
    if session is None:
        return
    if session.session_key is None:
        session.save()  # creates the key (and the cookie) for a first-time visitor
    job.session_key = session.session_key or ""
    ImageJob.objects.filter(pk=job.pk).update(session_key=job.session_key)
    jobs = [j for j in session.get(SESSION_KEY, []) if j != job.pk.hex]
    jobs.append(job.pk.hex)
    session[SESSION_KEY] = jobs[-SESSION_MAX_JOBS:]


def job_token(job: ImageJob) -> str:
    """A token that lets whoever holds it read ``job``'s status (HMAC of the id).

    Hand it only to the uploader (``job_status_url`` does): unlike the session,
    it survives parallel uploads whose session writes would race.
    """
    return salted_hmac(_TOKEN_SALT, job.pk.hex, algorithm="sha256").hexdigest()[:32]


def job_status_url(job: ImageJob) -> str:
    """The status URL of ``job`` for its uploader, with its token."""
    path = reverse("async_image_save:job-status", args=[job.pk])
    return f"{path}?token={job_token(job)}"


def can_view(request: HttpRequest, job: ImageJob) -> bool:
    """Owner, staff, the session that started the job, or the holder of its token."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and (user.is_staff or job.owner_id == user.pk):
        return True
    token = request.GET.get("token", "")
    if token and constant_time_compare(token, job_token(job)):
        return True
    session = getattr(request, "session", None)
    if session is None:
        return False
    key = session.session_key
    if key and job.session_key and constant_time_compare(key, job.session_key):
        return True
    return job.pk.hex in session.get(SESSION_KEY, [])


def stage(job: ImageJob) -> str:
    """A finer progress label than the state: queued, saving, thumbnails, done, failed."""
    if job.state == ImageJob.State.PENDING:
        return "saving" if job.attempts else "queued"
    if job.state == ImageJob.State.SAVED:
        return "thumbnails"
    return str(job.state)


def job_payload(job: ImageJob, *, full_error: bool = True) -> dict[str, Any]:
    """The JSON body for ``job``: state, stage, error and, once saved, URLs.

    Without ``full_error`` (viewers who are neither owner nor staff: a session or
    a token holder) the error text, which may quote internals, is replaced by a
    generic sentence; the machine-readable ``error_code`` stays.
    """
    body: dict[str, Any] = {
        "id": str(job.pk),
        "state": job.state,
        "stage": stage(job),
        "finished": job.is_finished,
        "attempts": job.attempts,
        "error_code": job.error_code or None,
        "error": (job.error if full_error else GENERIC_ERROR) if job.error else None,
        "image": None,
        "thumbnails": {},
    }
    model = job.content_type.model_class()
    if job.saved_name and model is not None:
        storage = model._meta.get_field(job.field_name).storage
        body["image"] = {"name": job.saved_name, "url": storage.url(job.saved_name)}
        current = {(s.name, s.digest) for s in specs_for(model._meta.label, job.field_name)}
        for thumb in Thumbnail.objects.filter(source_name=job.saved_name):
            if (thumb.spec, thumb.spec_hash) not in current:
                continue  # made under an older spec
            body["thumbnails"][thumb.spec] = {
                "url": storage.url(thumb.name),
                "width": thumb.width,
                "height": thumb.height,
            }
    return body


@never_cache
@require_GET
def job_status(request: HttpRequest, job_id: Any) -> JsonResponse:
    """JSON status of one job, for its owner, staff or its session; 404 for anyone else."""
    job = ImageJob.objects.select_related("content_type").filter(pk=job_id).first()
    if job is None or not can_view(request, job):
        raise Http404("No such job.")
    user = getattr(request, "user", None)
    full = user is not None and user.is_authenticated and (user.is_staff or job.owner_id == user.pk)
    return JsonResponse(job_payload(job, full_error=full))


def wants_json(request: HttpRequest) -> bool:
    """True when the client asked for JSON (``Accept: application/json``)."""
    return "application/json" in request.headers.get("Accept", "")


class AsyncImageFormViewMixin:
    """Mixin for Django's generic edit views whose form uses ``AsyncImageForm``.

    Passes the request to the form (so jobs get an owner and the session may
    poll) and, for ``Accept: application/json`` requests, answers JSON with the
    object id and its jobs instead of redirecting; invalid forms answer 400 with
    the form errors.
    """

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()  # type: ignore[misc]
        kwargs["request"] = self.request  # type: ignore[attr-defined]
        return kwargs

    def form_valid(self, form: Any) -> Any:
        if not wants_json(self.request):  # type: ignore[attr-defined]
            return super().form_valid(form)  # type: ignore[misc]
        # JSON clients need no success_url: save here instead of in the parent.
        self.object = form.save()

        jobs = {
            name: {
                "id": str(job.pk),
                "state": job.state,
                "status_url": job_status_url(job),
            }
            for name, job in getattr(form, "image_jobs", {}).items()
        }
        created = isinstance(self, CreateView)
        body = {"id": str(self.object.pk), "jobs": jobs}  # type: ignore[attr-defined]
        return JsonResponse(body, status=201 if created else 200)

    def form_invalid(self, form: Any) -> Any:
        if wants_json(self.request):  # type: ignore[attr-defined]
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        return super().form_invalid(form)  # type: ignore[misc]


class AsyncImageCreateView(AsyncImageFormViewMixin, CreateView):
    """``CreateView`` whose image uploads are offloaded (the form must use ``AsyncImageForm``)."""


class AsyncImageUpdateView(AsyncImageFormViewMixin, UpdateView):
    """``UpdateView`` whose image uploads are offloaded (the form must use ``AsyncImageForm``)."""
