"""The OpenAI-compatible routes' wire types (``/v2/{ep}/openai/v1/...``).

The request and answer bodies are OpenAI's and the worker's (RunPod's vLLM worker builds
them); the platform checks only what it must to route a request, and documents the rest as
open objects.  Errors are OpenAI's shape, so the ``openai`` SDKs raise their own exceptions.
"""

from __future__ import annotations

import msgspec

__all__ = ["OpenAIError", "OpenAIErrorInfo"]


class OpenAIErrorInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class OpenAIError(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every 4xx and 5xx of an OpenAI route: ``{"error": {"message", "type", "param", "code"}}``."""

    error: OpenAIErrorInfo
