"""DRF's APIView, minus the one per-request step of its dispatch that costs and never varies.

The service routes run DRF's dispatch on every call of the generation service. Measured per
request, its steps are cheap (a few microseconds each: the Request wrapper, instantiating the
parser, authenticators, permission and throttle classes, finalize_response) except content
negotiation, which parses the Accept header and each renderer's media type into objects every
time: about as much as all the others together. Its answer depends only on the negotiator and
renderer classes, the Accept header and `?format=`, so `LeanAPIView` remembers it. The rest is
APIView.dispatch itself, so responses and side effects stay DRF's:
tests/billing/test_service_dispatch.py sends the same requests with and without the memo and
compares status, headers and body.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import cast

from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

# Accept headers longer than this are negotiated afresh each time: a client controls the header,
# and the memo must stay small.
_MEMO_MAX_HEADER = 256


class LeanAPIView(APIView):
    # False negotiates afresh on every request, as APIView does (the tests compare the two).
    lean_dispatch = True

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        """DRF's negotiation, remembered for the inputs it depends on; a failure (406, or 404 for
        an unknown `?format=`) and the forced fallback after one are DRF's own, every time."""
        accept = request._request.META.get("HTTP_ACCEPT")
        if (
            force
            or not self.lean_dispatch
            or self.content_negotiation_class is not DefaultContentNegotiation  # another may read more
            or self.format_kwarg is not None
            or len(accept or "") > _MEMO_MAX_HEADER
        ):
            return super().perform_content_negotiation(request, force)
        format_param = self.settings.URL_FORMAT_OVERRIDE
        requested_format = None
        if format_param and request._request.META.get("QUERY_STRING"):  # skip parsing an empty one
            requested_format = request._request.GET.get(format_param)
        found = _negotiated(
            self.content_negotiation_class, tuple(self.renderer_classes), accept, requested_format, format_param
        )
        if found is None:
            return super().perform_content_negotiation(request, force)
        index, media_type = found
        return self.renderer_classes[index](), media_type


@functools.lru_cache(maxsize=128)
def _negotiated(
    negotiator_class: type[BaseContentNegotiation],
    renderer_classes: tuple[type[BaseRenderer], ...],
    accept: str | None,
    requested_format: str | None,
    format_param: str | None,
) -> tuple[int, str] | None:
    """(index of the renderer class, accepted media type) as the negotiator answers a request
    with this Accept header and `?format=`; None when it refuses."""
    renderers = [renderer_class() for renderer_class in renderer_classes]
    request = SimpleNamespace(
        headers={} if accept is None else {"accept": accept},
        query_params={} if requested_format is None else {format_param: requested_format},
    )
    try:
        renderer, media_type = negotiator_class().select_renderer(cast(Request, request), renderers, None)
    except Exception:
        return None
    return renderers.index(renderer), media_type
