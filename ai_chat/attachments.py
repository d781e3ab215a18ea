"""Files sent with a chat message: checked by content, stored privately, turned into parts.

The flow of a turn with files:
1. `from_request` (the stream view, before anything is saved) reads the `files` of a
   multipart request, enforces the limits of settings and checks each file by its bytes,
   never by its name: images are decoded and re-encoded with Pillow (no EXIF/GPS left,
   decompression bombs refused, the long side scaled down), PDFs are read for their text with
   pypdf, text must be UTF-8; anything else (executables, unknown binaries) is refused with
   `AttachmentRefused` naming the file and the reason.
2. `stored` writes them through Django's storage API under random names (before the turn's
   transaction, and removes them again if the turn is refused after all); `create_rows` saves
   their rows with the user's message.
3. `content_for` gives what a model reads for a message: the provider-neutral parts of
   `ChatRequest` (api_manager/providers/base.py), images and PDFs as references that
   `load_data` fills in after the transaction.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import unicodedata
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

from ai_chat.models import Attachment, AttachmentKind, Message

# Where the files go inside the storage (MEDIA_ROOT for the file system storage).
PREFIX = "attachments"
# Extensions of text and code files taken without a `text/*` type from the browser. The bytes
# must still be UTF-8 text: the name alone never lets a file in.
TEXT_EXTENSIONS = frozenset(
    """txt md markdown rst log csv tsv json jsonl yaml yml toml ini cfg conf env xml html htm css
    scss js mjs cjs ts tsx jsx py pyi rb go rs java kt kts scala c h cc cpp hpp cs swift m mm php
    pl pm lua r sql sh bash zsh fish ps1 bat dockerfile makefile gradle properties tf hcl vue
    svelte dart ex exs erl hs ml clj lisp el vim diff patch srt vtt tex bib""".split()
)
# Signatures of executables and archives: refused with a clear reason rather than "unknown".
EXECUTABLE_MAGIC = (
    b"MZ",
    b"\x7fELF",
    b"\xcf\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xca\xfe\xba\xbe",
)
# What a model is told about an image it no longer receives, and roughly what an image costs
# against the context budget (in characters, as the budget is counted: ~1,600 tokens).
IMAGE_PLACEHOLDER = "[image: {name}]"
IMAGE_BUDGET_CHARS = 6400


class AttachmentRefused(Exception):
    """A file that cannot be taken; `message` names it and says why, `status` is the HTTP
    status (413 for sizes and counts, 415 for types, 400 otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Prepared:
    """A checked file, not stored yet: the bytes to store (an image re-encoded) and what a
    model reads instead of them (a text file's content, a PDF's text)."""

    name: str
    kind: str
    content_type: str
    data: bytes
    text: str = ""
    # An image's pixel size (as stored), a PDF's page count: what the budget bounds them by.
    width: int | None = None
    height: int | None = None
    pages: int | None = None


@dataclass(frozen=True)
class Stored:
    prepared: Prepared
    path: str


def clean_name(raw: str) -> str:
    """The user's file name, only for showing: no directories, no control characters."""
    name = os.path.basename((raw or "").replace("\\", "/"))
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if len(name) > 200:
        stem, ext = os.path.splitext(name)
        name = stem[: 200 - len(ext[:20])] + ext[:20]
    return name or "file"


def _refuse(name: str, reason: str, status: int = 415) -> AttachmentRefused:
    return AttachmentRefused(
        _("“%(name)s” was refused: %(reason)s") % {"name": name, "reason": reason}, status
    )


def prepare(name: str, data: bytes, declared_type: str = "") -> Prepared:
    """Check one file by its bytes; return it ready to store, or raise AttachmentRefused."""
    name = clean_name(name)
    if not data:
        raise _refuse(name, _("the file is empty."), 400)
    if (
        data[:8] == b"\x89PNG\r\n\x1a\n"
        or data[:3] == b"\xff\xd8\xff"
        or data[:6]
        in (
            b"GIF87a",
            b"GIF89a",
        )
    ):
        return _prepare_image(name, data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _prepare_image(name, data)
    if data[:5] == b"%PDF-":
        return _prepare_pdf(name, data)
    if data.startswith(EXECUTABLE_MAGIC):
        raise _refuse(name, _("executable files are not accepted."))
    return _prepare_text(name, data, declared_type)


def _prepare_image(name: str, data: bytes) -> Prepared:
    from PIL import Image, ImageOps

    max_pixels = settings.CHAT_IMAGE_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns (and above twice the limit raises) on huge images: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            with Image.open(io.BytesIO(data)) as image:
                # The header's size, before any pixel is decoded.
                if image.width * image.height > max_pixels:
                    raise _refuse(name, _("the image is too large to decode."), 413)
                source_format = image.format or ""
                image.load()
                image = ImageOps.exif_transpose(image)
                if max(image.size) > settings.CHAT_IMAGE_MAX_SIDE:
                    image.thumbnail(
                        (settings.CHAT_IMAGE_MAX_SIDE, settings.CHAT_IMAGE_MAX_SIDE),
                        Image.Resampling.LANCZOS,
                    )
                out = io.BytesIO()
                # Re-encoded from the pixels only: EXIF, GPS, comments and any trailing bytes
                # are left behind. JPEG stays JPEG; the rest become PNG (an animated GIF keeps
                # its first frame).
                if source_format == "JPEG":
                    image.convert("RGB").save(out, "JPEG", quality=90)
                    content_type = "image/jpeg"
                else:
                    if image.mode not in ("RGB", "RGBA", "L", "LA"):
                        image = image.convert("RGBA")
                    image.save(out, "PNG", optimize=True)
                    content_type = "image/png"
    except AttachmentRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refuse(name, _("the image is too large to decode."), 413) from None
    except Exception:
        raise _refuse(name, _("the image cannot be read."), 400) from None
    width, height = image.size
    return Prepared(
        name, AttachmentKind.IMAGE, content_type, out.getvalue(), width=width, height=height
    )


def _prepare_pdf(name: str, data: bytes) -> Prepared:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise _refuse(name, _("the PDF is encrypted."), 400)
        pages: list[str] = []
        chars = 0
        count = len(reader.pages)
        for page in reader.pages:
            text = page.extract_text() or ""
            pages.append(text)
            chars += len(text)
            if chars > settings.CHAT_CONTEXT_CHARS:
                break
    except AttachmentRefused:
        raise
    except Exception:
        raise _refuse(name, _("the PDF cannot be read."), 400) from None
    text = _cut("\n\n".join(pages))
    return Prepared(name, AttachmentKind.PDF, "application/pdf", data, text, pages=count)


def _prepare_text(name: str, data: bytes, declared_type: str) -> Prepared:
    extension = os.path.splitext(name)[1].lower().lstrip(".") or name.lower()
    textual_name = extension in TEXT_EXTENSIONS or declared_type.startswith("text/")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text or _binary_looking(text):
        raise _refuse(name, _("only images, PDFs and UTF-8 text files are accepted."))
    if not textual_name:
        raise _refuse(name, _("this kind of file is not accepted (only text and code files)."))
    return Prepared(name, AttachmentKind.TEXT, "text/plain; charset=utf-8", data, _cut(text))


def _binary_looking(text: str) -> bool:
    """Control characters other than tab, newlines and form feed: not a text file."""
    sample = text[:8192]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f")
    return controls > len(sample) // 100


def _cut(text: str) -> str:
    """A text longer than the context budget, cut with a note the model (and user) can see."""
    limit = settings.CHAT_CONTEXT_CHARS
    if len(text) <= limit:
        return text
    # What a model reads is English whatever the interface language, like "[image: name]".
    return text[:limit] + f"\n[… cut: the file is longer than {limit} characters]"


def limits() -> dict[str, int]:
    """The limits the composer checks before sending (the server checks them again)."""
    return {"count": settings.CHAT_MAX_ATTACHMENTS, "bytes": settings.CHAT_MAX_ATTACHMENT_BYTES}


def _check_limits(uploads: Sequence[Any]) -> None:
    if len(uploads) > settings.CHAT_MAX_ATTACHMENTS:
        raise AttachmentRefused(
            _("Too many files: %(n)d at most per message.") % {"n": settings.CHAT_MAX_ATTACHMENTS},
            413,
        )
    for upload in uploads:
        if upload.size > settings.CHAT_MAX_ATTACHMENT_BYTES:
            raise _refuse(
                clean_name(upload.name),
                _("it is larger than %(size)s.")
                % {"size": filesizeformat(settings.CHAT_MAX_ATTACHMENT_BYTES)},
                413,
            )
    if sum(upload.size for upload in uploads) > settings.CHAT_MAX_ATTACHMENTS_TOTAL_BYTES:
        raise AttachmentRefused(
            _("The files are larger than %(size)s together.")
            % {"size": filesizeformat(settings.CHAT_MAX_ATTACHMENTS_TOTAL_BYTES)},
            413,
        )


def _read_uploads(request: HttpRequest) -> list[Prepared]:
    uploads = request.FILES.getlist("files")
    _check_limits(uploads)
    prepared = []
    for upload in uploads:
        with upload.open("rb") as handle:
            data = handle.read(settings.CHAT_MAX_ATTACHMENT_BYTES + 1)
        prepared.append(prepare(upload.name or "", data, upload.content_type or ""))
    return prepared


async def from_request(request: HttpRequest) -> list[Prepared]:
    """The checked `files` of a multipart request (none for another body).

    Raises AttachmentRefused for the first file refused, or for the limits; nothing is stored
    here. Decoding images is CPU work: it runs on a thread, not on the event loop.
    """
    if request.content_type != "multipart/form-data":
        return []
    return await asyncio.to_thread(_read_uploads, request)


@contextmanager
def stored(files: Sequence[Prepared]) -> Iterator[list[Stored]]:
    """Write `files` to the default storage under random names; if the block raises (the turn
    is refused after all), delete them again, so a refused turn leaves no file behind."""
    done: list[Stored] = []
    try:
        for prepared in files:
            suffix = _suffix(prepared)
            path = default_storage.save(
                f"{PREFIX}/{uuid.uuid4().hex}{suffix}", ContentFile(prepared.data)
            )
            done.append(Stored(prepared, path))
        yield done
    except BaseException:
        for item in done:
            default_storage.delete(item.path)
        raise


def _suffix(prepared: Prepared) -> str:
    return {
        "image/png": ".png",
        "image/jpeg": ".jpg",
        "application/pdf": ".pdf",
    }.get(prepared.content_type, ".txt")


def create_rows(
    message: Message, owner: Any, files: Sequence[Stored], kept: Sequence[Attachment] = ()
) -> list[Attachment]:
    """Save the rows of the stored files of `message` (one INSERT) and keep them on it.

    `kept`: attachments of an earlier version of the message that this one carries too. They
    get rows of their own naming the same stored file (no copy): a file is deleted only once
    no row names it (Conversation.delete deletes every version's rows together;
    remove_orphan_attachments keeps a file another row still names)."""
    rows = [
        Attachment(
            message=message,
            owner=owner,
            file=row.file.name,
            name=row.name,
            kind=row.kind,
            content_type=row.content_type,
            size=row.size,
            text=row.text,
            width=row.width,
            height=row.height,
            pages=row.pages,
            created_at=message.created_at,
        )
        for row in kept
    ] + [
        Attachment(
            message=message,
            owner=owner,
            file=item.path,
            name=item.prepared.name,
            kind=item.prepared.kind,
            content_type=item.prepared.content_type,
            size=len(item.prepared.data),
            text=item.prepared.text,
            width=item.prepared.width,
            height=item.prepared.height,
            pages=item.prepared.pages,
            created_at=message.created_at,
        )
        for item in files
    ]
    if rows:
        Attachment.objects.bulk_create(rows)
    message.attached = rows  # type: ignore[attr-defined]
    return rows


def load_for(messages: Iterable[Message], *, with_text: bool = True) -> None:
    """Set `attached` on each message: its attachments, in one query for those that have some
    (none at all when no message has any). The thread does not need the extracted text."""
    pending = [m for m in messages if not hasattr(m, "attached")]
    wanted = [m.pk for m in pending if m.attachment_count]
    by_message: dict[int, list[Attachment]] = {}
    if wanted:
        rows = Attachment.objects.filter(message_id__in=wanted).order_by("id")
        for row in rows if with_text else rows.defer("text"):
            by_message.setdefault(row.message_id, []).append(row)
    for message in pending:
        message.attached = by_message.get(message.pk, [])  # type: ignore[attr-defined]


def attached(message: Message) -> list[Attachment]:
    return list(getattr(message, "attached", ()) or ())


def cost(message: Message, *, images: bool = True) -> int:
    """What `message` costs against the context budget (characters), with or without its
    images (an image left out is a short placeholder)."""
    total = len(message.content)
    for row in attached(message):
        if row.kind == AttachmentKind.IMAGE:
            total += IMAGE_BUDGET_CHARS if images else len(row.name) + 10
        else:
            total += len(row.text) + len(row.name) + 10
    return total


def content_for(message: Message, *, images: bool = True) -> str | list[dict[str, Any]]:
    """What a model reads for `message`: its text alone, or parts (attachments first, then the
    text). Images and PDFs are references (`file`) that `load_data` reads; with `images`
    false an image is the placeholder "[image: name]"."""
    rows = attached(message)
    if not rows:
        return message.content
    parts: list[dict[str, Any]] = []
    for row in rows:
        if row.kind == AttachmentKind.IMAGE:
            if images:
                parts.append(
                    {"type": "image", "name": row.name, "media_type": row.content_type,
                     "file": row.file.name, "width": row.width, "height": row.height}
                )  # fmt: skip
            else:
                parts.append({"type": "text", "text": IMAGE_PLACEHOLDER.format(name=row.name)})
        elif row.kind == AttachmentKind.PDF and settings.CHAT_ATTACHMENT_PDF_NATIVE:
            parts.append(
                {"type": "document", "name": row.name, "media_type": "application/pdf",
                 "file": row.file.name, "text": file_text(row), "pages": row.pages}
            )  # fmt: skip
        else:
            parts.append({"type": "text", "name": row.name, "text": file_text(row)})
    if message.content:
        parts.append({"type": "text", "text": message.content})
    return parts


def file_text(row: Attachment) -> str:
    """A text file or a PDF's text as a model reads it: headed with the file name."""
    return f"[File: {row.name}]\n{row.text}"


def load_data(messages: Iterable[dict[str, Any]]) -> None:
    """Fill in the base64 `data` of the image and document parts of `messages` (read from the
    storage: done after the turn's transaction, not inside it)."""
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            path = part.get("file")
            if path and "data" not in part:
                with default_storage.open(path, "rb") as handle:
                    part["data"] = base64.b64encode(handle.read()).decode("ascii")


def count_in(messages: Iterable[dict[str, Any]]) -> int:
    """How many attachments a request carries (the parts that name a file)."""
    return sum(
        1
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("name")
    )
