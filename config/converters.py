"""URL converters shared by the routes and the code that checks ids the routes would accept.
Importing this module registers them: an app's urls.py imports it before building its patterns."""

from __future__ import annotations

from django.urls import register_converter


class PublicIdConverter:
    """Public ids (acct_..., deb_..., hold_...): anything else is a 404 before any query."""

    regex = "[A-Za-z0-9_]{1,64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(PublicIdConverter, "pubid")
