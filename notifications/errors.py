"""Refusals of the notification services, answered by config.errors in the documented shape."""

from __future__ import annotations

from config.errors import DomainError


class InvalidInput(DomainError):
    """A 400 validation_error naming the request field it is about."""

    status_code = 400
    code = "validation_error"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message, fields={field: [message]})


class NotFound(DomainError):
    status_code = 404
    code = "not_found"
    default_message = "No such object."
