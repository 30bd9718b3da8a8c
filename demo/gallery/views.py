"""Pages of the demo: gallery, upload, detail (with the zip of all sizes) and jobs."""

from __future__ import annotations

import threading
from pathlib import PurePath
from typing import Any

from django.contrib import messages
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from async_image_save import save_image
from async_image_save.exceptions import AsyncImageSaveError
from async_image_save.models import ImageJob, Thumbnail
from async_image_save.thumbnails import placeholder_url
from async_image_save.views import SESSION_KEY, can_view, job_status_url, remember_job, stage
from gallery.forms import PhotoForm
from gallery.models import Photo, SizeBundle
from gallery.tasks import request_bundle

PAGE_SIZE = 24
JOBS_SHOWN = 50

#: Serialises the session updates of parallel uploads (runserver: one process, many threads).
SESSION_LOCK = threading.Lock()


def wants_json(request: HttpRequest) -> bool:
    """True for the page's own XMLHttpRequest/fetch calls, false for a plain form POST."""
    xhr = request.headers.get("x-requested-with") == "XMLHttpRequest"
    return xhr or "application/json" in request.headers.get("accept", "")


def latest_jobs(request: HttpRequest, photos: list[Photo]) -> None:
    """Attach ``photo.job``: the state of its latest upload job, and a status URL if unfinished.

    The status URL (which carries the job's token) and the job id the
    placeholders are tagged with are only given to whoever may poll it (the
    uploading session, its owner, staff); everyone else just sees the placeholder.
    """
    content_type = ContentType.objects.get_for_model(Photo)
    latest: dict[str, ImageJob] = {}
    for job in ImageJob.objects.filter(
        content_type=content_type, object_id__in=[str(p.pk) for p in photos], field_name="image"
    ).order_by("-created_at"):
        latest.setdefault(job.object_id, job)
    for photo in photos:
        job = latest.get(str(photo.pk))
        photo.job = None  # type: ignore[attr-defined]
        if job is not None and job.state != ImageJob.State.DONE:
            polled = can_view(request, job) and not job.is_finished
            photo.job = {  # type: ignore[attr-defined]
                "id": str(job.pk) if polled else "",
                "state": job.state,
                "stage": stage(job),
                "status_url": job_status_url(job) if polled else "",
            }


@require_GET
def gallery(request: HttpRequest) -> HttpResponse:
    page = Paginator(Photo.objects.all(), PAGE_SIZE).get_page(request.GET.get("page"))
    photos = list(page.object_list)
    latest_jobs(request, photos)
    return render(request, "gallery/gallery.html", {"page": page, "photos": photos})


def remember_upload(request: HttpRequest, job: ImageJob) -> None:
    """``remember_job()`` that parallel uploads of one browser session cannot undo.

    Each request holds its own copy of the session, and SessionMiddleware saves
    that copy whole when the response leaves: of two uploads answered together,
    the later save would drop the other's job id (so the gallery and the Jobs
    page would no longer show that job as this visitor's). So the session is
    re-read, updated and saved here under a lock, and the middleware is told
    not to save its copy again. (The status URLs do not depend on this: they
    carry the job's token.) One process only, which is what runserver is.
    """
    with SESSION_LOCK:
        key = request.session.session_key
        if key:
            request.session = type(request.session)(session_key=key)  # type: ignore[call-arg]
        remember_job(request, job)
        request.session.save()
        if key and request.session.session_key == key:
            # Saved already; a new session (no key yet) still needs its cookie set.
            request.session.modified = False


def accept_upload(request: HttpRequest, form: PhotoForm) -> tuple[Photo, ImageJob]:
    """Create the photo without its file and hand the upload to the worker.

    One transaction: the task is sent when the photo and its job are committed.
    """
    upload = form.cleaned_data["image"]
    with transaction.atomic():
        photo = form.save(commit=False)
        photo.image = ""  # the worker fills it; saving the form would write the file here
        if not photo.title:
            photo.title = PurePath(upload.name or "photo").stem[:200]
        photo.save()
        job = save_image(upload, photo, user=request.user)
    remember_upload(request, job)  # the gallery and the Jobs page list the session's jobs
    return photo, job


def upload_answer(photo: Photo, job: ImageJob) -> dict[str, Any]:
    """What upload.js needs: the job, its status URL (with the job's token), the photo."""
    return {
        "job": str(job.pk),
        "state": job.state,
        "status_url": job_status_url(job),
        "photo": photo.pk,
        "photo_url": photo.get_absolute_url(),
        "title": photo.title,
    }


@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """The upload page; POST takes one file (from upload.js) or several (plain form).

    upload.js sends up to three files at once. Each answer's status URL carries
    the job's token, so polling never depends on the session; the session still
    lists the jobs on the Jobs page and in the gallery. It is created here,
    before the uploads, so that parallel first uploads share one session instead
    of each starting its own.
    """
    context: dict[str, Any] = {"placeholder_url": placeholder_url()}
    if request.method == "GET":
        request.session.setdefault(SESSION_KEY, [])
        context["form"] = PhotoForm()
        return render(request, "gallery/upload.html", context)

    files = request.FILES.getlist("image") or [None]
    accepted: list[tuple[Photo, ImageJob]] = []
    failed: PhotoForm | None = None
    for upload_file in files:
        form = PhotoForm(request.POST, {"image": upload_file} if upload_file else {})
        if form.is_valid():
            try:
                accepted.append(accept_upload(request, form))
                continue
            except AsyncImageSaveError as exc:  # e.g. UploadTooLarge
                form.add_error("image", ValidationError(str(exc), code="rejected"))
        failed = failed or form

    if wants_json(request):
        # upload.js sends one file per request (several requests at once);
        # several files get "jobs" (and "errors" if some were refused), the
        # first job also at the top level.
        errors = failed.errors.get_json_data() if failed is not None else None
        if not accepted:
            return JsonResponse({"errors": errors}, status=400)
        body = dict(upload_answer(*accepted[0]), jobs=[upload_answer(*a) for a in accepted])
        if errors:
            body["errors"] = errors
        return JsonResponse(body, status=202)

    if accepted:
        messages.success(
            request,
            f"{len(accepted)} photo(s) received; the worker is saving them and making "
            "thumbnails, which replace the placeholders when ready.",
        )
    if failed is not None:
        context["form"] = failed
        return render(request, "gallery/upload.html", context, status=400)
    return redirect("gallery:gallery")


@require_GET
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    photo = get_object_or_404(Photo, pk=pk)
    latest_jobs(request, [photo])
    thumbnails = []
    if photo.image:
        storage = photo.image.storage
        for thumb in Thumbnail.objects.filter(source_name=photo.image.name).order_by("width"):
            thumbnails.append({"record": thumb, "url": storage.url(thumb.name)})
    return render(
        request,
        "gallery/detail.html",
        {
            "photo": photo,
            "thumbnails": thumbnails,
            "bundle": photo.bundles.filter(source_name=photo.image.name).first()
            if photo.image
            else None,
        },
    )


def bundle_payload(bundle: SizeBundle) -> dict[str, Any]:
    return {
        "id": bundle.pk,
        "state": bundle.state,
        "url": bundle.file.url if bundle.state == SizeBundle.State.DONE and bundle.file else None,
        "error": bundle.error or None,
        "status_url": bundle.get_absolute_url(),
    }


@require_POST
def bundle_create(request: HttpRequest, pk: int) -> HttpResponse:
    """Start (or reuse) the zip of all sizes of a photo."""
    photo = get_object_or_404(Photo, pk=pk)
    try:
        with transaction.atomic():
            bundle = request_bundle(photo)
    except ValueError as exc:
        if wants_json(request):
            return JsonResponse({"state": "failed", "error": str(exc)}, status=409)
        messages.error(request, str(exc))
        return redirect(photo)
    if wants_json(request):
        return JsonResponse(bundle_payload(bundle), status=202)
    return redirect(bundle)


@never_cache
@require_GET
def bundle(request: HttpRequest, pk: int) -> HttpResponse:
    """The zip's state: JSON for the detail page's script, a self-refreshing page otherwise."""
    size_bundle = get_object_or_404(SizeBundle.objects.select_related("photo"), pk=pk)
    if wants_json(request):
        return JsonResponse(bundle_payload(size_bundle))
    return render(request, "gallery/bundle.html", {"bundle": size_bundle})


def visible_jobs(request: HttpRequest) -> tuple[QuerySet[ImageJob], bool]:
    """All jobs for staff; the jobs of this session (and of this user) for everyone else."""
    jobs = ImageJob.objects.select_related("content_type", "owner")
    user = request.user
    if user.is_authenticated and user.is_staff:
        return jobs, True
    mine = Q(pk__in=request.session.get(SESSION_KEY, []))
    if user.is_authenticated:
        mine |= Q(owner=user)
    return jobs.filter(mine), False


@never_cache
@require_GET
def jobs(request: HttpRequest) -> HttpResponse:
    """Recent upload jobs and recent failures."""
    visible, everyone = visible_jobs(request)
    recent = list(visible[:JOBS_SHOWN])
    failures = list(visible.filter(state=ImageJob.State.FAILED)[:JOBS_SHOWN])
    photo_type = ContentType.objects.get_for_model(Photo)
    for job in (*recent, *failures):
        job.stage_label = stage(job)  # type: ignore[attr-defined]
        job.photo_url = (  # type: ignore[attr-defined]
            reverse("gallery:detail", args=[job.object_id])
            if job.content_type_id == photo_type.pk
            else ""
        )
    counts = {
        row["state"]: row["n"] for row in visible.order_by().values("state").annotate(n=Count("pk"))
    }
    return render(
        request,
        "gallery/jobs.html",
        {
            "recent": recent,
            "failures": failures,
            "counts": [(state, counts.get(state, 0)) for state in ImageJob.State.values],
            "everyone": everyone,
        },
    )
