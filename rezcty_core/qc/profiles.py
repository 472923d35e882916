"""QC profiles: the stock agency's thresholds as JSON, built-ins in rezcty_core/data/qc_profiles/, user folders
after them (a later folder's profile of the same name wins), `"extends"` merging one profile onto another."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from rezcty_core.common.paths import DATA_DIR
from rezcty_core.qc.verdict import ON_UNAVAILABLE, REASON_CODES

BUILTIN_PROFILE_DIR = DATA_DIR / "qc_profiles"
PROFILES_ENV = "REZCTY_QC_PROFILES"  # more profile folders, os.pathsep-separated


class ProfileError(ValueError):
    pass


def profile_dirs(extra: list[str | Path] | None = None) -> list[Path]:
    """Where profiles are looked up, later folders overriding earlier ones (built-ins first)."""
    return [BUILTIN_PROFILE_DIR, *[Path(p) for p in (extra or [])]]


def user_profile_dirs(comfy_user_dir: str | Path | None = None) -> list[Path]:
    """The user profile folders, as the QC Judge reads them: `<ComfyUI user dir>/rezcty/qc_profiles/` when the
    user directory is given, then each folder in $REZCTY_QC_PROFILES (the QC Judge node and
    training.calibrate_qc both look names up here)."""
    dirs = [Path(comfy_user_dir) / "rezcty" / "qc_profiles"] if comfy_user_dir else []
    return dirs + [Path(d) for d in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if d]


def find_profile(name_or_path: str | Path, extra: list[str | Path] | None = None) -> dict:
    """`load_profile` for a profile name, or for a path to a .json file (its folder is read last, so it wins)."""
    spec = str(name_or_path)
    path = Path(spec).expanduser()
    if spec.endswith(".json") or os.sep in spec or (os.altsep and os.altsep in spec):
        if not path.is_file():
            raise ProfileError(f"{path}: QC profile file not found")
        return load_profile(path.stem, [*(extra or []), path.parent])
    return load_profile(spec, extra)


def list_profiles(extra: list[str | Path] | None = None) -> list[str]:
    names: list[str] = []
    for folder in profile_dirs(extra):
        if folder.is_dir():
            names.extend(p.stem for p in sorted(folder.glob("*.json")) if p.stem not in names)
    return names


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_profile(name: str, extra: list[str | Path] | None = None, _seen: tuple = ()) -> dict:
    """Load profile NAME.json (the last folder that has it wins); `"extends": "other"` merges onto another."""
    path = next((d / f"{name}.json" for d in reversed(profile_dirs(extra)) if (d / f"{name}.json").is_file()), None)
    if path is None:
        raise ProfileError(f"QC profile '{name}' not found in {', '.join(str(d) for d in profile_dirs(extra))}; "
                           f"copy {BUILTIN_PROFILE_DIR / 'adobe_stock.json'} there and edit it")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ProfileError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    parent = data.get("extends")
    if parent:
        if parent in _seen or parent == name:
            raise ProfileError(f"{path}: 'extends' loops back to '{parent}'")
        data = _merge(load_profile(parent, extra, (*_seen, name)), {k: v for k, v in data.items() if k != "extends"})
    for key, check in data.get("checks", {}).items():
        if check.get("code") not in REASON_CODES or check.get("code") == "check_unavailable" or "measure" not in check or not ({"min", "max"} & set(check)):
            raise ProfileError(f"{path}: check '{key}' needs a known 'code' ({', '.join(REASON_CODES)}), "
                               f"a 'measure' and a 'min' or 'max'")
        if check.get("on_unavailable", "reject") not in ON_UNAVAILABLE:
            raise ProfileError(f"{path}: check '{key}': 'on_unavailable' is one of {', '.join(ON_UNAVAILABLE)} "
                               f"(reject: an image this check could not judge is rejected with check_unavailable)")
        when = check.get("when")
        if when is not None and (not isinstance(when, dict) or "measure" not in when or not ({"min", "max"} & set(when))):
            raise ProfileError(f"{path}: check '{key}': 'when' needs a 'measure' and a 'min' or 'max' "
                               f"(the check applies only while that measurement is in range)")
    data["name"], data["path"] = name, str(path)
    return data
