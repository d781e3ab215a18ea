"""GET /ai-chat/attachments/<id>/: an attachment's bytes, for its owner only."""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, Http404, HttpResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from ai_chat.attachments import PREFIX
from ai_chat.models import Attachment
from core.http import AuthenticatedHttpRequest

# The internal nginx location (deploy/nginx.conf) that serves PREFIX of MEDIA_ROOT.
X_ACCEL_LOCATION = "/_attachments/"


def _get_attachment_for_user(request: AuthenticatedHttpRequest, pk: int) -> Attachment:
    """The attachment `pk` if the signed-in user owns it; Http404 otherwise."""
    try:
        return Attachment.objects.get(pk=pk, owner=request.user)
    except Attachment.DoesNotExist:
        raise Http404("No such attachment") from None


@require_GET
def attachment(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The file, as an image shown in the page or a download for anything else.

    With CHAT_ATTACHMENTS_X_ACCEL and the file system storage, nginx sends the bytes (an
    X-Accel-Redirect to its internal location, which sets nosniff and the CSP itself: nginx
    drops the app's headers on an internal redirect); otherwise the view streams the file.
    """
    row = _get_attachment_for_user(request, pk)
    path = row.file.name
    if settings.CHAT_ATTACHMENTS_X_ACCEL and isinstance(default_storage, FileSystemStorage):
        response = HttpResponse(content_type=row.content_type)
        response["X-Accel-Redirect"] = X_ACCEL_LOCATION + quote(path.removeprefix(PREFIX + "/"))
    else:
        try:
            handle = default_storage.open(path, "rb")
        except FileNotFoundError:
            raise Http404("No such attachment") from None
        response = FileResponse(handle, content_type=row.content_type)
        response["Content-Length"] = str(row.size)
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=not row.is_image, filename=row.name
    )
    response["X-Content-Type-Options"] = "nosniff"
    # A file is never a page: no script, style or frame runs from it, even if opened directly.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response
