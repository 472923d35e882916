"""Stock-site output: metadata drafting and rules, keywords, blocklisted terms, categories, agency CSVs, XMP/IPTC.

One concept per module: `prompt_clean` (the prompt's content), `image_facts` (what the pixels say), `drafting`
(LLM or deterministic drafts, the reply schema), `limits` (Adobe's limits), `rules` (the rules layer, run last),
`qc_report` (the QC Judge's report), `provenance` (seeds, models, hashes), `writer` (`writer.write_batch()`: JPEGs,
sidecars, CSV rows); `filenames` (safe paths, unique stock file names), `agencies` (agency data files, one row
per image), `agency_csv` (any agency's CSV: appends, validation), `export` (agency CSVs rebuilt from sidecars),
`keyword_budget` (keyword order, redundancy, budgets), `xmp_iptc` (embedded metadata), `keywords`, `categories`,
`seen_brands`, `adobe_review` (Adobe's review results read back).
"""
