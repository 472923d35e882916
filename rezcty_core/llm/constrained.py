"""Schema-constrained decoding: every JSON reply parses and matches its schema on the first attempt.

    reply = llm.generate_json(messages, validate, schema=JUDGE_VERDICT_SCHEMA, seed=1)

A JSON schema is compiled with xgrammar (docs/llm.md says why this library) against the model's tokenizer;
its transformers logits processor masks, at each step, every token that cannot continue a document of the
schema, and once the document is complete only the end-of-turn token is left. It is one more logits processor
in front of the one sampler (`sampling.RowSampler`), which then draws among the allowed tokens with the same
per-row seed as an unconstrained reply, so even an untrained model answers with schema-valid JSON. Strings and
arrays carry `maxLength`/`maxItems`, so the longest possible document fits the token budget given here; retries
(`LoadedLLM.generate_json`) remain for the semantic checks of `validate` (an unknown reason code, an empty title).
"""
from __future__ import annotations

import json
import threading
from typing import Any

from rezcty_core.llm.chat import eos_token_ids

_LOCK = threading.Lock()
_TOKENIZER_INFO: dict[tuple, Any] = {}
_COMPILED: dict[tuple[tuple, str], Any] = {}

# how a document may be written: the keys in the schema's order, one line with json.dumps' separators ", " and
# ": " (no free whitespace, so an untrained model cannot spend its token budget on blanks). A model that writes
# valid JSON this way writes exactly the same tokens constrained or not
# (tests/test_metadata_llm.py::test_constrained_greedy_equals_free_greedy). Not any_order: xgrammar 0.2.9 then
# lets a key repeat, and an untrained model wrote "description" twice and ran past its token budget.
GRAMMAR_OPTIONS = {"any_whitespace": False, "strict_mode": True}

# tokens allowed for one constrained reply at least (a full document of the schemas below fits)
MIN_JSON_TOKENS = 512


def available() -> bool:
    try:
        import xgrammar  # noqa: F401
    except ImportError:
        return False
    return True


def _compiler_key(llm: Any) -> tuple:
    # the tokenizer's folder and sizes, not its id(): weights are dropped and reloaded (ComfyUI's /free,
    # keep_loaded off), and a new tokenizer object may reuse the id of another model's old one
    vocab = int(llm.model.get_output_embeddings().weight.shape[0])
    return (str(getattr(llm.tokenizer, "name_or_path", "")), len(llm.tokenizer), vocab)


def compiled_grammar(llm: Any, schema: dict) -> Any:
    """The schema compiled for this model's tokenizer (cached per tokenizer and schema)."""
    import xgrammar as xgr

    # the cache key may be canonical, the compiled text may not: xgrammar writes (and with any_order=False would
    # require) the properties in the order the schema lists them, so sorting the keys here reordered the
    # document a model writes (a trained {"verdict", "title", ...} was forced into {"category", "description", ...})
    text = json.dumps(schema)
    key = (_compiler_key(llm), json.dumps(schema, sort_keys=True))
    with _LOCK:
        if key in _COMPILED:
            return _COMPILED[key]
        info = _TOKENIZER_INFO.get(key[0])
        if info is None:
            info = xgr.TokenizerInfo.from_huggingface(llm.tokenizer, vocab_size=key[0][2],
                                                      stop_token_ids=eos_token_ids(llm.tokenizer, llm.model))
            _TOKENIZER_INFO.clear()  # one model at a time: drop grammars of an unloaded tokenizer
            _COMPILED.clear()
            _TOKENIZER_INFO[key[0]] = info
        grammar = xgr.GrammarCompiler(info).compile_json_schema(text, **GRAMMAR_OPTIONS)
        _COMPILED[key] = grammar
        return grammar


def json_processor(llm: Any, schema: dict, rows: int = 1) -> Any:
    """A fresh logits processor (one per `generate()` call) for `rows` rows of this schema."""
    import xgrammar as xgr

    return xgr.contrib.hf.LogitsProcessor([compiled_grammar(llm, schema)] * rows)
