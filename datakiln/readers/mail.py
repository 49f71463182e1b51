"""E-mail messages (RFC 5322 files such as .eml): one record per file."""

from __future__ import annotations

import email.errors
import email.utils
import logging
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from datakiln.config import SourceConf
from datakiln.readers.base import RawBatch, RawReject, ReadStats, frame_of, printable
from datakiln.readers.files import SourceFile

logger = logging.getLogger(__name__)

COLUMNS = ("subject", "from", "to", "date", "message_id", "body")


def read_email(
    file: SourceFile, source: SourceConf, batch_rows: int, stats: ReadStats
) -> Iterator[RawBatch]:
    """The headers and body of one message; `date` as ISO 8601 when it parses.

    The body is the text/plain part, else the text/html part (clean strips the
    tags), else null. A message whose parts cannot be decoded is a reject.
    """
    stats.encodings["email"] += 1
    message = BytesParser(policy=policy.default).parse(file.stream)
    assert isinstance(message, EmailMessage)
    headers = {
        "subject": _header(message, "subject"),
        "from": _header(message, "from"),
        "to": _header(message, "to"),
        "date": _date(_header(message, "date")),
        "message_id": _header(message, "message-id"),
    }
    try:
        body = _body(message)
    except (LookupError, UnicodeError, ValueError, email.errors.MessageError) as exc:
        detail = f"{file.name}: the body cannot be decoded ({exc})"
        reject = RawReject(1, "bad_email", detail, headers)
        yield RawBatch(frame_of([]), [], typed=True, rejects=[reject])
        return
    yield RawBatch(frame_of([{**headers, "body": body}]), [1], typed=True)


def _header(message: EmailMessage, name: str) -> str | None:
    value = message.get(name)
    # Raw 8-bit bytes in a header survive parsing as lone surrogates.
    return None if value is None else printable(str(value))


def _date(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError):
        # Keep what the message says; a declared datetime type rejects it.
        return value


def _body(message: EmailMessage) -> str | None:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return None
    content = part.get_content()
    return content if isinstance(content, str) else None
