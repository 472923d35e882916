"""Schema-constrained decoding: every JSON reply parses and matches its schema on the first attempt.

    reply = llm.generate_json(messages, validate, schema=JUDGE_VERDICT_SCHEMA, seed=1)

A JSON schema is compiled with xgrammar (docs/llm.md says why this library) against the model's tokenizer;
its transformers logits processor masks, at each step, every token that cannot continue a document of the
schema, and once the document is complete only the end-of-turn token is left. Sampling (`batching.RowSampler`)
then draws among the allowed tokens, so even an untrained model answers with schema-valid JSON. Strings and
arrays carry `maxLength`/`maxItems`, so the longest possible document fits the token budget given here; retries
remain for the semantic checks of `validate` (an unknown reason code, an empty title).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from rezcty_core.llm.batching import generate_batch
from rezcty_core.llm.chat import eos_token_ids
from rezcty_core.llm.json_reply import JsonReply

_LOCK = threading.Lock()
_TOKENIZER_INFO: dict[int, Any] = {}
_COMPILED: dict[tuple[int, str], Any] = {}

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


def _compiler_key(llm: Any) -> int:
    return id(llm.tokenizer)


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
        info = _TOKENIZER_INFO.get(_compiler_key(llm))
        if info is None:
            vocab = int(llm.model.get_output_embeddings().weight.shape[0])
            info = xgr.TokenizerInfo.from_huggingface(llm.tokenizer, vocab_size=vocab, stop_token_ids=eos_token_ids(llm.tokenizer, llm.model))
            _TOKENIZER_INFO.clear()  # one model at a time: drop grammars of an unloaded tokenizer
            _COMPILED.clear()
            _TOKENIZER_INFO[_compiler_key(llm)] = info
        grammar = xgr.GrammarCompiler(info).compile_json_schema(text, **GRAMMAR_OPTIONS)
        _COMPILED[key] = grammar
        return grammar


def json_processor(llm: Any, schema: dict, rows: int = 1) -> Any:
    """A fresh logits processor (one per `generate()` call) for `rows` rows of this schema."""
    import xgrammar as xgr

    return xgr.contrib.hf.LogitsProcessor([compiled_grammar(llm, schema)] * rows)


def generate_json_constrained(llm: Any, messages: list[dict], schema: dict,
                              validate: Callable[[Any], Any] | None = None, *, retries: int = 2, image: Any = None,
                              seed: int = 0, **sampling: Any) -> Any:
    """`LoadedLLM.generate_json` with the reply constrained to `schema` (a `JsonReply`)."""
    llm.load()
    errors: list[str] = []
    raw = ""
    opts = dict(sampling)
    opts["max_new_tokens"] = max(int(opts.get("max_new_tokens", MIN_JSON_TOKENS)), MIN_JSON_TOKENS)
    for attempt in range(int(retries) + 1):
        run = dict(opts)
        if attempt and not run.get("do_sample", True):
            run["do_sample"] = True
        if attempt and float(run.get("temperature", 0.0) or 0.0) <= 0:
            run["temperature"] = 0.7
        raw = generate_batch(llm, [messages], [int(seed) + attempt], [image], processors=[json_processor(llm, schema)],
                             **run)[0]
        try:
            obj = json.loads(raw)
        except ValueError as e:
            errors.append(f"attempt {attempt + 1}: not JSON ({e}); the reply hit max_new_tokens "
                          f"{run['max_new_tokens']} before the document closed")
            continue
        try:
            value = validate(obj) if validate else obj
            return JsonReply(obj if value is None else value, attempt + 1, raw, errors)
        except (ValueError, TypeError, KeyError) as e:
            errors.append(f"attempt {attempt + 1}: {e}")
    return JsonReply(None, int(retries) + 1, raw, errors)
