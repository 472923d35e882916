"""Quality control: technical measurements and verdicts, BRISQUE, duplicates, the contact sheet, synthetic calibration images.

Entry points: `checks.judge_batch()`, `checks.measure()`, `dedup.DuplicateIndex`, `contact_sheet.write_contact_sheet()`.
"""
