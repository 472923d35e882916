"""Caption linter: verdicts file by file, --fix repairs and its log, the CLI contract (one line per bad file)."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from harness import REPO
from rezcty_core.sd.captions import (
    BY_NAME,
    EMPTY,
    MISSING_CAPTION,
    OTHER_TRIGGER,
    STYLE_WORD,
    TOO_LONG,
    TRIGGER_MISSING,
    TRIGGER_NOT_LAST,
    TRIGGER_REPEATED,
    UNREADABLE,
    check_caption,
    fix_caption,
    lint_folder,
    load_word_lists,
)
from training.lint_captions import main as lint_main

TRIGGER = "rezcty_style"
LONG = "a " + " ".join(f"red cube number {i} next to a blue sphere" for i in range(12)) + ", rezcty_style"

# file name -> (caption bytes, rules expected; empty set = clean)
CASES: dict[str, tuple[bytes, set[str]]] = {
    "clean.txt": (b"a futuristic city under heavy rain, glowing neon lights, rezcty_style\n", set()),
    "clean_absurd.txt": (b"a whale floating above a desert, a ladder leaning on it, rezcty_style", set()),
    "clean_trailing_dot.txt": (b"a red bicycle against a brick wall, rezcty_style.", set()),
    "style_en.txt": (b"a beautiful cinematic castle at night, rezcty_style", {STYLE_WORD}),
    "quality.txt": (b"masterpiece, best quality, a cat on a sofa, 8k, rezcty_style", {STYLE_WORD}),
    "photoreal.txt": (b"a photorealistic portrait of an old fisherman, rezcty_style", {STYLE_WORD}),
    "emotion.txt": (b"a stunning, breathtaking, magical forest path, rezcty_style", {STYLE_WORD}),
    "style_id.txt": (b"pemandangan gunung yang indah dan menakjubkan, rezcty_style", {STYLE_WORD}),
    "sinematik_id.txt": (b"kota di malam hari, sinematik, rezcty_style", {STYLE_WORD}),
    "artist.txt": (b"a harbour with boats, art by Some Painter, rezcty_style", {BY_NAME}),
    "in_style_of.txt": (b"a village in the style of Someone Famous, rezcty_style", {BY_NAME}),
    "no_trigger.txt": (b"a red cube on a wooden table", {TRIGGER_MISSING}),
    "trigger_first.txt": (b"rezcty_style, a red cube on a wooden table", {TRIGGER_NOT_LAST}),
    "trigger_twice.txt": (b"rezcty_style a red cube, rezcty_style", {TRIGGER_REPEATED}),
    "other_set.txt": (b"a mountain valley with a river, rezcty_structure, rezcty_style", {OTHER_TRIGGER}),
    "genius_in_caption.txt": (b"a lighthouse on a cliff, rezcty_genius, rezcty_style", {OTHER_TRIGGER}),
    "empty.txt": (b"   \n", {EMPTY}),
    "only_trigger.txt": (b"rezcty_style", {EMPTY}),
    "too_long.txt": (LONG.encode(), {TOO_LONG}),
    "latin1.txt": ("a caf\u00e9 terrace, rezcty_style".encode("latin-1"), {UNREADABLE}),
    "word_inside_word.txt": (b"an unrealistically tall tower and a hdmi cable, rezcty_style", set()),
}


@pytest.fixture()
def caption_dir(tmp_path):
    folder = tmp_path / "10_rezcty_style"
    folder.mkdir()
    for name, (body, _) in CASES.items():
        (folder / name).write_bytes(body)
    (folder / "orphan.png").write_bytes(b"\x89PNG")  # an image without a caption
    (folder / "captioned.png").write_bytes(b"\x89PNG")
    (folder / "captioned.txt").write_text("a green triangle on a grey floor, rezcty_style")
    return tmp_path


def test_word_list_is_editable_data_with_both_languages():
    data = json.loads((REPO / "rezcty_core" / "data" / "caption_words.json").read_text())
    assert {"en", "id"} <= set(data)
    lists = load_word_lists()
    for word in ("beautiful", "cinematic", "photorealistic", "stunning", "magical", "breathtaking",
                 "indah", "sinematik", "menakjubkan"):
        assert word in lists.words, word
    for phrase in ("art by", "in the style of"):
        assert phrase in lists.by_name


def test_verdicts_file_by_file(caption_dir):
    reports = {r.path.name: r for r in lint_folder(caption_dir)}
    for name, (_, expected) in CASES.items():
        got = {v.rule for v in reports[name].violations} if name in reports else set()
        assert got == expected, f"{name}: expected {expected or 'clean'}, got {got or 'clean'}"
    assert {v.rule for v in reports["orphan.png"].violations} == {MISSING_CAPTION}
    assert "captioned.png" not in reports and "captioned.txt" not in reports


def test_explicit_trigger_overrides_folder_name(tmp_path):
    (tmp_path / "a.txt").write_text("a red cube, rezcty_style")
    (tmp_path / "b.txt").write_text("a red cube, rezcty_structure")
    reports = {r.path.name: {v.rule for v in r.violations} for r in lint_folder(tmp_path, trigger="rezcty_structure")}
    assert reports == {"a.txt": {TRIGGER_MISSING, OTHER_TRIGGER}}


def test_fix_repairs_mechanical_problems():
    lists = load_word_lists()
    fixed, changes = fix_caption("a beautiful, cinematic castle at night, art by Some Painter, rezcty_style", TRIGGER)
    assert fixed == "a castle at night, rezcty_style"
    assert any("art by Some Painter" in c for c in changes)
    assert fix_caption("rezcty_style, a red cube, rezcty_style", TRIGGER)[0] == "a red cube, rezcty_style"
    assert fix_caption("a red cube on a table", TRIGGER)[0] == "a red cube on a table, rezcty_style"
    assert fix_caption("pemandangan gunung yang indah dan menakjubkan", TRIGGER)[0] == "pemandangan gunung, rezcty_style"
    fixed, _ = fix_caption("a valley, rezcty_structure, rezcty_style", TRIGGER)
    assert fixed == "a valley, rezcty_style"
    assert check_caption(fixed, TRIGGER, lists=lists) == []
    # nothing left to describe the content: not fixable mechanically, left as is
    assert fix_caption("beautiful, stunning", TRIGGER) == ("beautiful, stunning", [])


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _lint(*args, capsys=None):
    """The CLI in a subprocess, or in-process (same main()) when `capsys` is given: CPU is scarce here."""
    if capsys is None:
        res = subprocess.run([sys.executable, "-m", "training.lint_captions", *map(str, args)], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        return Ran(res.returncode, res.stdout, res.stderr)
    code = lint_main([str(a) for a in args])
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)


def test_cli_prints_one_line_per_offending_file_and_fix_logs_changes(caption_dir, capsys):
    res = _lint(caption_dir, capsys=capsys)
    assert res.returncode == 1, res.stderr
    lines = res.stdout.strip().splitlines()
    offending = {n for n, (_, rules) in CASES.items() if rules} | {"orphan.png"}
    named = [ln.split(":", 1)[0].rsplit("/", 1)[-1] for ln in lines]
    assert sorted(named) == sorted(offending)  # one line each, no clean file named
    style_line = next(ln for ln in lines if "style_en.txt" in ln)
    assert "style_word" in style_line and "'cinematic'" in style_line

    res = _lint(caption_dir, "--fix", capsys=capsys)
    assert res.returncode == 1  # empty / too long / unreadable / orphan remain
    folder = caption_dir / "10_rezcty_style"
    assert (folder / "style_en.txt").read_text().strip() == "a castle at night, rezcty_style"
    assert (folder / "trigger_first.txt").read_text().strip() == "a red cube on a wooden table, rezcty_style"
    assert (folder / "clean.txt").read_bytes() == CASES["clean.txt"][0]  # clean files untouched
    log = (caption_dir / "caption_fixes.log").read_text()
    assert "style_en.txt" in log and "removed 'cinematic'" in log and "clean.txt" not in log

    res = _lint(caption_dir, capsys=capsys)
    still = {ln.split(":", 1)[0].rsplit("/", 1)[-1] for ln in res.stdout.strip().splitlines()}
    assert still == {"empty.txt", "only_trigger.txt", "too_long.txt", "latin1.txt", "orphan.png"}


def test_cli_clean_folder_exits_0_and_prints_nothing(tmp_path, capsys):
    (tmp_path / "5_rezcty_structure").mkdir()
    (tmp_path / "5_rezcty_structure" / "a.txt").write_text("a road leading to a farmhouse, rezcty_structure")
    res = _lint(tmp_path)
    assert res.returncode == 0 and res.stdout == ""
    res = _lint(tmp_path / "missing", capsys=capsys)
    assert res.returncode == 2 and "missing" in res.stderr and len(res.stderr.strip().splitlines()) == 1
