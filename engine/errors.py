"""One error hierarchy for the whole engine.

Every error carries a stable machine-readable ``code``, a human message that names the
input, the HTTP status a server answers with and the exit code a CLI command ends with.
"""

from __future__ import annotations


class ImgsearchError(Exception):
    code = "error"
    http_status = 500
    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


# --- bad input: the caller can fix it -------------------------------------------------------
class InputError(ImgsearchError):
    code = "bad_input"
    http_status = 400
    exit_code = 1


class ImageDecodeError(InputError):
    """Not an image, a truncated or corrupt one, or a format we do not read."""

    code = "decode_error"
    http_status = 422


class EmptyInputError(ImageDecodeError):
    code = "empty_input"


class UnsupportedFormatError(ImageDecodeError):
    code = "unsupported_format"
    http_status = 415


class ImageTooLargeError(InputError):
    """Too many pixels (decompression bomb) or too many bytes."""

    code = "too_large"
    http_status = 413


class FetchError(InputError):
    """A URL could not be fetched: refused by policy, unreachable, too slow or too big."""

    code = "fetch_error"
    http_status = 422


class URLRefusedError(FetchError):
    code = "url_refused"
    http_status = 400


class ProcessingError(InputError):
    """One input made the engine fail in an unexpected way (a bug, a crashed worker process):
    reported for that input like bad input, and the run goes on."""

    code = "internal_error"
    http_status = 500


class WorkerCrashedError(ProcessingError):
    code = "worker_crashed"


class NotFoundError(ImgsearchError):
    code = "not_found"
    http_status = 404
    exit_code = 1


class AuthError(ImgsearchError):
    code = "unauthorized"
    http_status = 401
    exit_code = 1


class ForbiddenError(AuthError):
    """A key was given but it does not allow this (wrong key, or writes are not enabled)."""

    code = "forbidden"
    http_status = 403


class RequestTimeoutError(InputError):
    """The client did not send its request in time."""

    code = "request_timeout"
    http_status = 408


# --- the engine cannot proceed ----------------------------------------------------------------
class ConfigError(ImgsearchError):
    code = "config_error"
    http_status = 500
    exit_code = 2


class SourceError(ImgsearchError):
    """A list of inputs (``--urls``, ``--csv``) cannot be read: the run cannot start."""

    code = "bad_source"
    http_status = 400
    exit_code = 2


class DatabaseError(ImgsearchError):
    code = "database_error"
    http_status = 500
    exit_code = 2


class DatabaseUnavailableError(DatabaseError):
    code = "database_unavailable"
    http_status = 503


class ShardUnavailableError(DatabaseUnavailableError):
    """A shard of a scaled-out database (docs/scale.md) does not answer: writes to it fail; a
    search answers from the other shards and says which are missing."""

    code = "shard_unavailable"


class ServerBusyError(ImgsearchError):
    """The server could not answer within its time limit; the request may be retried."""

    code = "timeout"
    http_status = 503
    exit_code = 2


class FeatureUnavailableError(ImgsearchError):
    """An optional extra is not installed; the message says how to enable it."""

    code = "feature_unavailable"
    http_status = 501
    exit_code = 2
