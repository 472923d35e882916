"""API-format workflow files: load one, find a node by id or title, set an input (`--set NODE.INPUT=VALUE`)."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rezcty_core.factory.errors import ClientError


def load_workflow(path: str | Path) -> dict:
    """Read an API-format workflow; a UI-format file is refused with what to do instead."""
    path = Path(path)
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClientError(f"{path}: no such workflow file") from None
    except json.JSONDecodeError as e:
        raise ClientError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise ClientError(f"{path}: this is a UI-format workflow; use its API-format twin "
                          f"(workflows/*.api.json) or, in ComfyUI, Workflow > Export (API)")
    if isinstance(graph, dict) and "prompt" in graph and isinstance(graph["prompt"], dict):
        graph = graph["prompt"]
    if not isinstance(graph, dict) or not all(isinstance(v, dict) and "class_type" in v for v in graph.values()):
        raise ClientError(f"{path}: expected an API-format workflow: {{node_id: {{class_type, inputs}}}}")
    return graph


def find_node(graph: dict, ref: str) -> str:
    """A node id from an id, a title (`_meta.title`) or a class_type that occurs once."""
    if ref in graph:
        return ref
    by_title = [k for k, v in graph.items() if v.get("_meta", {}).get("title") == ref]
    if len(by_title) == 1:
        return by_title[0]
    by_class = [k for k, v in graph.items() if v.get("class_type") == ref]
    if len(by_class) == 1:
        return by_class[0]
    if len(by_title) > 1 or len(by_class) > 1:
        raise ClientError(f"node '{ref}' is ambiguous (ids {sorted(by_title or by_class)}); use the node id")
    known = ", ".join(f"{k} ({v.get('class_type')})" for k, v in graph.items())
    raise ClientError(f"no node '{ref}' in the workflow (nodes: {known})")


def parse_value(text: str, current: Any = None) -> Any:
    """`--set` value: JSON when it parses (numbers, true/false, lists), kept a string where the input is one.

    `null` on a linked or absent input removes it (disconnects an optional input)."""
    if isinstance(current, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_input(graph: dict, target: str, value: Any, parse: bool = False) -> None:
    """Set NODE.INPUT (NODE = id, title or unique class_type) on a graph in place."""
    node_ref, sep, input_name = target.rpartition(".")
    if not sep or not node_ref or not input_name:
        raise ClientError(f"'{target}': expected NODE.INPUT, e.g. 5.seed or KSampler.steps")
    node_id = find_node(graph, node_ref)
    inputs = graph[node_id].setdefault("inputs", {})
    if parse:
        current = inputs.get(input_name)
        value = None if value == "null" and not isinstance(current, str) else parse_value(value, current)
    if value is None:  # `NODE.INPUT=null` disconnects an (optional) input
        inputs.pop(input_name, None)
    else:
        inputs[input_name] = value


def apply_sets(graph: dict, sets: Iterable[str]) -> dict:
    """Apply `NODE.INPUT=VALUE` strings; returns the graph (changed in place)."""
    for item in sets:
        target, sep, value = item.partition("=")
        if not sep:
            raise ClientError(f"--set '{item}': expected NODE.INPUT=VALUE")
        set_input(graph, target.strip(), value, parse=True)
    return graph


# ---------------------------------------------------------------------------------------------
# validation against /object_info

