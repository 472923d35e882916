"""Stock-site output: metadata drafting and rules, keywords, blocklisted terms, categories, the Adobe CSV, XMP/IPTC.

Entry points: `metadata.write_batch()`, `adobe_csv` (the upload CSV), `xmp_iptc` (embedded metadata).
"""
