"""What a review request can be refused for: each error carries the HTTP status and the stable
code the API answers with (docs/contracts.md, "Review")."""

from __future__ import annotations

from typing import ClassVar

from gateway.errors import BedsideError


class ReviewRefusedError(BedsideError):
    """A review request the gateway refuses (one sentence, safe to show)."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_review"


class DraftNotFoundError(ReviewRefusedError):
    status = 404
    code = "draft_not_found"


class StaleDecisionError(ReviewRefusedError):
    """A decision or edit made on an older version, or a decision too old (or from the future)."""

    status = 409
    code = "stale"


class AlreadyDecidedError(ReviewRefusedError):
    status = 409
    code = "already_decided"


class ReviewSignatureError(ReviewRefusedError):
    status = 403
    code = "bad_signature"


class NotTheReviewerError(ReviewRefusedError):
    status = 403
    code = "forbidden"
