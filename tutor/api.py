"""The REST API (DRF). Views parse input, call one service or selector, render output."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tutor.selectors import launched_profile


class MeApi(APIView):
    """The launched caller: `GET /api/v1/me/`."""

    def get(self, request: Request) -> Response:
        return Response(launched_profile(launched=request.user))
