"""JSON replies of an LLM: the first JSON value in a reply, and the record of how many attempts it took."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JsonReply:
    value: Any | None
    attempts: int
    raw: str
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """The first JSON object or array in a reply (code fences and chatter around it are ignored)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        for i, ch in enumerate(cand):
            if ch in "{[":
                try:
                    return decoder.raw_decode(cand[i:])[0]
                except json.JSONDecodeError:
                    continue
    raise ValueError("no JSON object found in the reply")

