"""Quality control: profiles, per-image measurements, the verdict, the LLM judge, duplicates, the contact sheet.

Entry points: `batch.judge_batch()`, `measure.measure()`, `profiles.load_profile()`, `dedup.DuplicateIndex`,
`contact_sheet.write_contact_sheet()`.
"""
