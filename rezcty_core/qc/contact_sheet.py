"""A contact sheet of a judged batch: a self-contained HTML page and a PNG grid, for review at a glance.

Each tile shows the thumbnail, the verdict (green pass / red reject), the score, the reason codes and
the key measurements. Thumbnails are embedded in the HTML (base64 JPEG), so the page can be mailed
or opened from Google Drive without its folder. A cluster of similar images (the similar-content budget:
`similar_cluster` in the entries) is shown together, in one framed group that says how many it keeps.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

THUMB = 256
KEY_MEASUREMENTS = (("megapixels", "MP"), ("blur_sigma_px", "blur px"), ("noise_sigma", "noise"),
                    ("jpeg_blockiness", "blocks"), ("jpeg_quality", "JPEG q"), ("banding_ratio", "banding"),
                    ("channel_range", "range"),
                    ("mean_luma", "luma"), ("brisque", "BRISQUE"), ("text_boxes", "text"))
COLOURS = {"pass": (46, 160, 67), "reject": (207, 34, 46)}


def not_run_summary(entries: list[dict]) -> list[str]:
    """One line per check that did not run on some image: `check (n of N images): reason` (first reason seen)."""
    seen: dict[str, list] = {}
    for e in entries:
        for nr in e.get("checks_not_run") or []:
            item = seen.setdefault(nr["check"], [0, nr.get("reason", "")])
            item[0] += 1
    return [f"{check} ({n} of {len(entries)} images): {reason}" for check, (n, reason) in seen.items()]


def thumbnail(rgb: np.ndarray, size: int = THUMB) -> Image.Image:
    img = Image.fromarray(np.asarray(rgb)[..., :3])
    img.thumbnail((size, size), Image.LANCZOS)
    return img


def _key_lines(measurements: dict) -> list[str]:
    out = []
    for key, label in KEY_MEASUREMENTS:
        value = measurements.get(key)
        if value is not None:
            out.append(f"{label} {value:g}" if isinstance(value, (int, float)) else f"{label} {value}")
    return out


def grouped_order(entries: list[dict]) -> list[int]:
    """Positions in sheet order: each cluster of similar images together, where its first member stands."""
    first: dict[int, int] = {}
    for pos, entry in enumerate(entries):
        if entry.get("similar_cluster") is not None:
            first.setdefault(entry["similar_cluster"], pos)
    return sorted(range(len(entries)), key=lambda pos: (first.get(entries[pos].get("similar_cluster"), pos), pos))


def _cluster_line(entries: list[dict], cluster: int) -> str:
    members = [e for e in entries if e.get("similar_cluster") == cluster]
    kept = sum(e["verdict"] == "pass" for e in members)
    keep = next((e["measurements"]["similar_to"]["keep"] for e in members
                 if (e.get("measurements") or {}).get("similar_to")), None)
    return (f"similar group {cluster}: {len(members)} images, {kept} kept"
            + (f" (at most {keep} per group)" if keep is not None else ""))


def render_html(entries: list[dict], thumbs: list[Image.Image], title: str = "rezcty QC") -> str:
    passed = sum(e["verdict"] == "pass" for e in entries)
    lines = not_run_summary(entries)
    not_run_html = ("<p>Checks that did not run (their model or runtime is missing or corrupt):</p><ul class=notrun>"
                    + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>") if lines else ""
    tiles = []
    order = grouped_order(entries)
    for n, pos in enumerate(order):
        entry, thumb = entries[pos], thumbs[pos]
        cluster = entry.get("similar_cluster")
        if cluster is not None and (n == 0 or entries[order[n - 1]].get("similar_cluster") != cluster):
            tiles.append(f'<div class="cluster"><div class=clabel>{html.escape(_cluster_line(entries, cluster))}</div>')
        buf = io.BytesIO()
        thumb.save(buf, "JPEG", quality=85)
        src = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        verdict = entry["verdict"]
        reasons = ", ".join(entry.get("reasons", [])) or "—"
        meas = " · ".join(_key_lines(entry.get("measurements", {})))
        llm = entry.get("llm") or {}
        llm_line = f"<div class=llm>LLM: {html.escape(str(llm.get('status', '')))}</div>" if llm else ""
        flags = entry.get("flags") or []  # people / hands: for the reviewer, never a rejection by default
        flag_line = f"<div class=flags>check: {html.escape(', '.join(flags))}</div>" if flags else ""
        not_run = [nr["check"] for nr in entry.get("checks_not_run") or []]
        if not_run:  # the gate failed closed (or a flag is missing): say which checks never looked at this image
            flag_line += f"<div class=notrun>not run: {html.escape(', '.join(not_run))}</div>"
        tiles.append(
            f'<figure class="{verdict}"><img src="{src}" alt="image {entry["index"]}">'
            f'<figcaption><b>#{entry["index"]} {verdict.upper()}</b> score {entry.get("score", 0):g}'
            f'<div class=reasons>{html.escape(reasons)}</div><div class=meas>{html.escape(meas)}</div>'
            f'{flag_line}{llm_line}</figcaption></figure>')
        if cluster is not None and (n == len(order) - 1 or entries[order[n + 1]].get("similar_cluster") != cluster):
            tiles.append("</div>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:sans-serif;background:#111;color:#eee;margin:1em}}
.grid{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{margin:0;width:{THUMB + 8}px;background:#222;border:4px solid #555;border-radius:4px}}
figure.pass{{border-color:#2ea043}} figure.reject{{border-color:#cf222e}}
img{{display:block;max-width:{THUMB}px;max-height:{THUMB}px;margin:auto}}
figcaption{{padding:4px;font-size:12px}} .reasons{{color:#ff9b9b}} .meas,.llm{{color:#aaa}} .flags{{color:#ffd479}}
.notrun{{color:#ff9b3b}} ul.notrun{{background:#3a2400;padding:.5em 2em}}
.cluster{{display:flex;flex-wrap:wrap;gap:12px;padding:8px;border:2px dashed #d29922;border-radius:6px}}
.clabel{{width:100%;color:#d29922;font-size:13px}}
</style></head><body>
<h1>{html.escape(title)}</h1><p>{len(entries)} images: {passed} passed, {len(entries) - passed} rejected.</p>
{not_run_html}
<div class="grid">
{chr(10).join(tiles)}
</div></body></html>
"""


def render_png(entries: list[dict], thumbs: list[Image.Image], columns: int = 6) -> Image.Image:
    font = ImageFont.load_default()
    n = max(1, len(entries))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    text_h = 14 * 4
    cell_w, cell_h = THUMB + 12, THUMB + 12 + text_h
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (17, 17, 17))
    draw = ImageDraw.Draw(sheet)
    for i, pos in enumerate(grouped_order(entries)):
        entry, thumb = entries[pos], thumbs[pos]
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        colour = COLOURS.get(entry["verdict"], (128, 128, 128))
        draw.rectangle([x + 1, y + 1, x + cell_w - 2, y + THUMB + 10], outline=colour, width=4)
        sheet.paste(thumb, (x + 6 + (THUMB - thumb.width) // 2, y + 6 + (THUMB - thumb.height) // 2))
        lines = [f"#{entry['index']} {entry['verdict'].upper()}  score {entry.get('score', 0):g}",
                 ", ".join(entry.get("reasons", [])) or "-"]
        if entry.get("flags"):
            lines[1] += "  check: " + ", ".join(entry["flags"])
        if entry.get("similar_cluster") is not None:  # the group also shows by its amber underline
            lines[0] += f"  similar #{entry['similar_cluster']}"
            draw.line([x + 4, y + THUMB + 12, x + cell_w - 4, y + THUMB + 12], fill=(210, 153, 34), width=3)
        meas = _key_lines(entry.get("measurements", {}))
        lines += [" ".join(meas[:3]), " ".join(meas[3:6])]
        if entry.get("checks_not_run"):  # in place of the second row of measurements
            lines[3] = "NOT RUN: " + ", ".join(nr["check"] for nr in entry["checks_not_run"])
        for j, line in enumerate(lines):
            draw.text((x + 6, y + THUMB + 14 + 14 * j), line[:44], fill=colour if j == 0 else (220, 220, 220), font=font)
    return sheet


def write_contact_sheet(entries: list[dict], images: list[np.ndarray], folder: str | Path, stem: str,
                        title: str = "rezcty QC") -> tuple[Path, Path]:
    """Write `<stem>.html` and `<stem>.png` into `folder`; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from rezcty_core.qc.people import draw_people
    from rezcty_core.qc.text import draw_regions

    thumbs = [draw_people(draw_regions(thumbnail(img), e.get("text_regions", []), np.asarray(img).shape[:2]),
                          e.get("people_regions", []))
              for e, img in zip(entries, images)]
    html_path, png_path = folder / f"{stem}.html", folder / f"{stem}.png"
    html_path.write_text(render_html(entries, thumbs, title), encoding="utf-8")
    render_png(entries, thumbs).save(png_path)
    return html_path, png_path
