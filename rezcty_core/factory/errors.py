"""What the client raises: every message says what to do and where."""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# errors

class ClientError(Exception):
    """Anything the user must act on; the message says what and where."""


class ValidationFailed(ClientError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the workflow does not fit this server:\n" + "\n".join(f"  - {p}" for p in problems))


class ServerUnavailable(ClientError):
    """The server could not be reached (down, restarted, wrong URL)."""


class PromptFailed(ClientError):
    """The server rejected or failed this prompt; retrying the same item will fail the same way."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


# ---------------------------------------------------------------------------------------------
# workflow files

