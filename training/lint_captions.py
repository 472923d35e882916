"""Check (and with --fix, repair) training captions: content only, no style words, trigger last.

    python -m training.lint_captions DIR [--trigger WORD] [--fix]

Prints one line per offending file (path: rules broken) and nothing for clean files.
Exit 1 when any caption still breaks a rule. `--fix` removes listed words and other sets'
triggers, moves/adds the trigger to the end, and appends what it changed to DIR/caption_fixes.log.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from rezcty_core.sd.captions import WORDS_FILE, FileReport, lint_folder, load_word_lists

FIX_LOG = "caption_fixes.log"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.lint_captions", description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder of images + captions (kohya `N_name` sub-folders allowed)")
    ap.add_argument("--trigger", default=None,
                    help="trigger word every caption must end with (default: the kohya folder name, e.g. 10_rezcty_style)")
    ap.add_argument("--fix", action="store_true", help="repair what can be repaired mechanically, log the changes")
    ap.add_argument("--words", type=Path, default=WORDS_FILE, help="style/quality/emotion word list (JSON)")
    ap.add_argument("--caption-ext", default=".txt", help="caption file extension")
    return ap.parse_args(argv)


def format_report(report: FileReport) -> str:
    line = f"{report.path}: "
    if report.changes:
        line += "fixed (" + "; ".join(report.changes) + ")"
        if report.violations:
            line += "; still " + "; ".join(str(v) for v in report.violations)
        return line
    return line + "; ".join(str(v) for v in report.violations)


def write_fix_log(root: Path, reports: list[FileReport]) -> Path | None:
    fixed = [r for r in reports if r.changes]
    if not fixed:
        return None
    log = root / FIX_LOG
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(log, "a", encoding="utf-8") as fh:
        for r in fixed:
            fh.write(f"{stamp}\t{r.path}\t{'; '.join(r.changes)}\t{r.fixed_text}\n")
    return log


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        reports = lint_folder(args.data, trigger=args.trigger, fix=args.fix, ext=args.caption_ext,
                              lists=load_word_lists(args.words))
    except (FileNotFoundError, ValueError) as e:
        print(f"lint_captions: {e}", file=sys.stderr)
        return 2
    for r in reports:
        print(format_report(r))
    if args.fix:
        log = write_fix_log(args.data, reports)
        if log:
            print(f"lint_captions: changes logged in {log}", file=sys.stderr)
    return 1 if any(r.violations for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
