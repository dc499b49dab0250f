"""coordinator."""

from coordinator._token_secret import ensure_token_secret

__all__ = ["ensure_token_secret"]
