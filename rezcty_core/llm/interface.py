"""What "an LLM" means to its callers: the `TextGenerator` protocol.

The Whisperer (`llm/whisperer.py`), the QC judge (`qc/judge.py`) and the metadata drafts (`stock/drafting.py`)
take a `TextGenerator`; `LoadedLLM` (`llm/model.py`) is the one implementation. The protocol lists only what
those callers use, so a stand-in for a test or another backend knows what to provide.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from rezcty_core.llm.json_reply import JsonReply


@runtime_checkable
class TextGenerator(Protocol):
    """Generates text and JSON from chats, optionally looking at an image embedding."""

    @property
    def specialist(self) -> str | None:
        """The adapter's specialist (`whisperer`, `judge`) or None for a plain base model."""

    @property
    def can_see(self) -> bool:
        """Whether `image=` is read (the adapter has a projector)."""

    @property
    def identity(self) -> dict:
        """Base and adapter names and hashes, for provenance records."""

    def check_image(self, image: Any) -> None:
        """Raise a clear error when this model cannot read `image` (no projector, another eye)."""

    def generate(self, messages: list[dict], image: Any = None, *, temperature: float = 0.75, top_p: float = 0.95,
                 top_k: int = 50, max_new_tokens: int = 128, seed: int = 0, do_sample: bool = True) -> str:
        """One answer to one chat; same seed, same answer."""

    def generate_batch(self, chats: list[list[dict]], seeds: list[int], images: list | None = None, *,
                       temperature: float = 0.75, top_p: float = 0.95, top_k: int = 50, max_new_tokens: int = 128,
                       do_sample: bool = True, processors: list | None = None) -> list[str]:
        """One answer per chat, each row with its own seed (a row's answer does not depend on its batch mates)."""

    def generate_json(self, messages: list[dict], validate: Callable[[Any], Any] | None = None, *,
                      retries: int = 2, image: Any = None, seed: int = 0, schema: dict | None = None,
                      **sampling: Any) -> JsonReply:
        """A reply holding JSON that `validate` accepts, with the attempts it took (`JsonReply`)."""

    def batch_size(self, prompt_tokens: int = 512, new_tokens: int = 128) -> int:
        """Rows per `generate_batch` that fit the free memory."""

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's tokenizer."""

    def release(self) -> None:
        """Called after use: give the memory back unless the model is to stay loaded."""
