"""Files visitors and hosts attach: what is accepted, judged by content, not by name.

Only images and PDFs (what a support chat needs: screenshots, invoices), at
most 10 MB. The type comes from the first bytes (magic numbers), so an
executable named ``.png`` is refused; the name is cleaned and given the
extension of the type found, so Mattermost previews it as what it is.
"""

from __future__ import annotations

import re
import unicodedata

MAX_FILE_BYTES = 10 * 1024 * 1024
# What one multipart upload may add around the file: the text field
# (80,000 characters of UTF-8 at most 320 kB), names, boundaries, headers.
MULTIPART_OVERHEAD = 512 * 1024
MAX_UPLOAD_BODY = MAX_FILE_BYTES + MULTIPART_OVERHEAD
MAX_NAME = 120

# (magic bytes at offset 0, MIME type, extension). WebP is RIFF....WEBP.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
    (b"%PDF-", "application/pdf", "pdf"),
)
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
}
ACCEPTED = "PNG, JPEG, GIF or WebP images and PDF documents"


class UploadRefused(ValueError):
    """The file cannot be accepted; the message says why, for the visitor or host."""


def sniff(content: bytes) -> str | None:
    """The MIME type the content's first bytes show, or None when it is not accepted."""
    for magic, mime_type, _ in _SIGNATURES:
        if content.startswith(magic):
            return mime_type
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_file(name: str, content: bytes) -> tuple[str, str]:
    """A safe name and the MIME type of an accepted file.

    :raises UploadRefused: empty, too large, or not an image or a PDF by content.
    """
    if not content:
        raise UploadRefused("The file is empty.")
    if len(content) > MAX_FILE_BYTES:
        raise UploadRefused(
            f"The file is too large ({len(content) / 1_048_576:.1f} MB); at most 10 MB."
        )
    mime_type = sniff(content)
    if mime_type is None:
        raise UploadRefused(
            f"Only {ACCEPTED} can be attached; this file's content is none of these, "
            "whatever its name says."
        )
    return safe_name(name, mime_type), mime_type


def safe_name(name: str, mime_type: str) -> str:
    """The last path part, printable characters only, with the extension of its type."""
    name = re.split(r"[\\/]", name or "")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    name = name.strip(" .") or "file"
    extension = EXTENSIONS[mime_type]
    stem, dot, given = name.rpartition(".")
    if dot and given.lower() in (extension, "jpeg" if extension == "jpg" else extension):
        extension = given  # the visitor's own spelling of the right extension
    else:
        stem = name
    stem = stem[: MAX_NAME - len(extension) - 1]
    return f"{stem}.{extension}"
