"""The projector-LLM: loading and generation, adapters, the projector, prompt templates, text metrics,
and the two specialists (the Whisperer; the judge's template and reply schema).

Entry points: `model.load_llm()` -> `LoadedLLM.generate()` / `.generate_json()`, `whisperer.expand_ideas()`,
`templates.build_messages()`, `projector.Projector`, `curate` (diverse subset selection).
"""
