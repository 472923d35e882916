"""Thumbnails for ComfyUI's template browser: `example_workflows/<name>.jpg` beside each `<name>.json`.

    .venv/bin/python tools/make_thumbnails.py

* The QC lines (`line3_*`): a real run of the QC Judge's code (`rezcty_core.qc.batch.judge_batch` and the contact
  sheet the node writes) on real photographs shipped with scikit-image, as given and with the faults the judge
  catches (a watermark, a plain 2x enlargement, a blur); the sheet is the thumbnail. Profile: adobe_stock with a
  0.1 MP minimum (the photos are 0.1-0.3 MP).
* The other lines render SD 1.5 images, which the test suite's random tiny checkpoint cannot make meaningfully:
  their thumbnail is a rendering of the workflow graph itself (the UI JSON's nodes, titles and links).
Deterministic; run it again after a workflow changes (tests/test_install.py checks that every workflow has one).
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
FOLDER = REPO / "example_workflows"
SIZE = (768, 512)  # the template browser shows them at about 3:2


def qc_sheet() -> Image.Image:
    from fixtures import qc_synth_text
    from skimage import data

    from rezcty_core.qc import contact_sheet
    from rezcty_core.qc.batch import judge_batch
    from rezcty_core.qc.profiles import load_profile

    passed = [data.coffee(), data.astronaut(), data.rocket()]
    marked = qc_synth_text.watermark(data.chelsea(), "centre", opacity=0.6, height_pct=8, seed=1)
    blurred = np.asarray(Image.fromarray(data.immunohistochemistry()).filter(ImageFilter.GaussianBlur(4)))
    hubble = data.hubble_deep_field()[:600, :800]
    enlarged = np.asarray(Image.fromarray(hubble[::2, ::2]).resize((800, 600), Image.LANCZOS))
    images = [*passed, marked, enlarged, blurred]
    profile = copy.deepcopy(load_profile("adobe_stock"))
    profile["checks"]["resolution_min"]["min"] = 0.1
    profile["duplicate"]["phash_max_distance"] = -1  # every picture here is its own
    entries = judge_batch(images, profile)
    thumbs = [contact_sheet.thumbnail(img) for img in images]
    from rezcty_core.qc.people import draw_people
    from rezcty_core.qc.text import draw_regions

    thumbs = [draw_people(draw_regions(t, e.get("text_regions", []), np.asarray(img).shape[:2]),
                          e.get("people_regions", [])) for t, e, img in zip(thumbs, entries, images)]
    for e in entries:
        print(f"  #{e['index']} {e['verdict']} {e['reasons']} {e.get('flags')}")
    return contact_sheet.render_png(entries, thumbs, columns=3)


def graph_picture(workflow: dict, title: str) -> Image.Image:
    """The UI graph drawn to scale: each node a box with its title, each link a line from output to input."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    xs = [n["pos"][0] for n in nodes.values()] + [n["pos"][0] + n["size"][0] for n in nodes.values()]
    ys = [n["pos"][1] for n in nodes.values()] + [n["pos"][1] + n["size"][1] for n in nodes.values()]
    x0, y0, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    scale = min((SIZE[0] - 40) / w, (SIZE[1] - 80) / h)
    img = Image.new("RGB", SIZE, (32, 32, 36))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(10, int(15 * min(1.0, scale * 1.6))))
    big = ImageFont.load_default(size=26)

    def at(x: float, y: float) -> tuple[float, float]:
        return 20 + (x - x0) * scale, 60 + (y - y0) * scale

    for link in workflow.get("links", []):
        _, src, _, dst, slot, _ = link[:6]
        if src in nodes and dst in nodes:
            a, b = nodes[src], nodes[dst]
            p = at(a["pos"][0] + a["size"][0], a["pos"][1] + 30)
            q = at(b["pos"][0], b["pos"][1] + 30 + 20 * slot)
            draw.line([p, q], fill=(120, 200, 120), width=2)
    for n in nodes.values():
        (ax, ay), (bx, by) = at(*n["pos"]), at(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        note = n["type"] in ("Note", "MarkdownNote")
        rezcty = n["type"].startswith("Rezcty")
        fill = (70, 64, 40) if note else ((44, 62, 90) if rezcty else (58, 58, 64))
        draw.rounded_rectangle([ax, ay, bx, by], radius=6, fill=fill, outline=(150, 150, 160), width=1)
        draw.rectangle([ax, ay, bx, ay + 18 * min(1.0, scale * 1.6) + 4], fill=(90, 90, 100) if not rezcty else (60, 100, 160))
        label = n.get("title") or n["type"]
        draw.text((ax + 4, ay + 2), label[: max(4, int((bx - ax) / 7))], fill=(240, 240, 240), font=font)
    draw.text((20, 16), title, fill=(240, 240, 240), font=big)
    return img


def fit(img: Image.Image) -> Image.Image:
    img = img.copy()
    img.thumbnail(SIZE, Image.LANCZOS)
    canvas = Image.new("RGB", SIZE, (17, 17, 17))
    canvas.paste(img, ((SIZE[0] - img.width) // 2, (SIZE[1] - img.height) // 2))
    return canvas


def main() -> None:
    sheet = None
    for path in sorted(FOLDER.glob("*.json")):
        workflow = json.loads(path.read_text())
        if path.stem.startswith("line3_"):
            sheet = sheet or qc_sheet()
            thumb = fit(sheet)
            made = "a real QC run (contact sheet)"
        else:
            thumb = graph_picture(workflow, f"rezcty: {path.stem.replace('_', ' ')}")
            made = "the workflow graph"
        out = path.with_suffix(".jpg")
        thumb.save(out, "JPEG", quality=85, optimize=True)
        print(f"{out.relative_to(REPO)}: {made}")


if __name__ == "__main__":
    main()
