"""The one exception the action service raises."""

from __future__ import annotations

from typing import Any


class ActionRefused(Exception):
    """An action that was not done. `message` is safe to show; `status` is the HTTP status a view
    answers with (400 bad input, 403 no permission, 404 unknown, 409 conflict); `details` are
    extra fields for the JSON answer (for a conflict: a fresh preview)."""

    def __init__(
        self, message: str, status: int = 400, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details or {}

    def as_json(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}
