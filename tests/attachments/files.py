"""Files for the attachment tests, made here (no binary fixtures in the repository)."""

from __future__ import annotations

import io

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

GPS_IFD = 0x8825


def png(size: tuple[int, int] = (64, 48), *, colour: str = "red", exif: bool = True) -> bytes:
    """A PNG carrying EXIF with a GPS position (what must not survive the re-encode)."""
    image = Image.new("RGB", size, colour)
    out = io.BytesIO()
    kwargs = {}
    if exif:
        data = Image.Exif()
        data[0x010F] = "SecretCam"  # Make
        data.get_ifd(GPS_IFD)[2] = (35.0, 41.0, 0.0)  # GPSLatitude
        kwargs["exif"] = data.tobytes()
    image.save(out, "PNG", **kwargs)
    return out.getvalue()


def jpeg(size: tuple[int, int] = (3000, 2000)) -> bytes:
    image = Image.new("RGB", size, "blue")
    data = Image.Exif()
    data[0x010F] = "SecretCam"
    data.get_ifd(GPS_IFD)[2] = (35.0, 41.0, 0.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=data.tobytes())
    return out.getvalue()


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (20, 20)).save(out, "GIF")
    return out.getvalue()


def webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 20), "green").save(out, "WEBP")
    return out.getvalue()


def bomb() -> bytes:
    """A small PNG that decodes to 100 million pixels (a decompression bomb)."""
    out = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(out, "PNG", optimize=True)
    return out.getvalue()


def pdf(text: str = "Quarterly report: revenue grew") -> bytes:
    """A one-page PDF whose text pypdf extracts."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    body = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return body


def exe() -> bytes:
    return b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200


def upload(name: str, data: bytes, content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)
