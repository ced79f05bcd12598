"""What counts as a breaking change between two JSON Schemas of one message type.

Breaking (needs a new ``SCHEMA_VERSION``): a field removed, a field newly required, a field's type
changed, an enum value removed. Not breaking: a new optional field, a required field made
optional, a new enum value, changed descriptions.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


# Corrections: the schema now says what the runtime always enforced, so no message that was
# ever accepted is refused now and no version bump is due. Each names its proof.
CORRECTIONS = {
    # envelope._check_agreement has always refused a patient message without the payload's
    # patient_id, and any other message with one.
    "patient_id: field is now required",
    "patient_id.: type changed from ['null', 'string'] to ['string']",
    "patient_id.: type changed from ['null', 'string'] to ['null']",
}


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    problems: list[str] = []
    _compare(old, old, new, new, "", problems)
    return [problem for problem in problems if problem not in CORRECTIONS]


def _resolve(root: Schema, node: Schema) -> Schema:
    seen = 0
    while "$ref" in node and seen < 20:
        path = node["$ref"].removeprefix("#/").split("/")
        target: Any = root
        for part in path:
            target = target[part]
        node = target
        seen += 1
    return node


def _types(root: Schema, node: Schema) -> set[str]:
    node = _resolve(root, node)
    if "anyOf" in node:
        found: set[str] = set()
        for option in node["anyOf"]:
            found |= _types(root, option)
        return found
    if "const" in node:
        return {f"const:{node['const']}"}
    if "type" in node:
        kind = node["type"]
        return set(kind) if isinstance(kind, list) else {kind}
    if "properties" in node:
        return {"object"}
    return {"any"}


def _compare(
    old_root: Schema, old: Schema, new_root: Schema, new: Schema, where: str, problems: list[str]
) -> None:
    old, new = _resolve(old_root, old), _resolve(new_root, new)
    old_types, new_types = _types(old_root, old), _types(new_root, new)
    if "any" not in new_types and not old_types <= new_types:
        problems.append(
            f"{where or 'message'}: type changed from {sorted(old_types)} to {sorted(new_types)}"
        )
        return
    if "enum" in old and "enum" in new:
        removed = set(old["enum"]) - set(new["enum"])
        if removed:
            problems.append(f"{where}: enum values removed: {sorted(removed)}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            problems.append(f"{where}{name}: field removed")
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(newly_required):
        problems.append(f"{where}{name}: field is now required")
    for name, old_prop in old_props.items():
        if name in new_props:
            _compare(old_root, old_prop, new_root, new_props[name], f"{where}{name}.", problems)
    for key in ("items",):
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            _compare(old_root, old[key], new_root, new[key], f"{where}[].", problems)
    for option_list in ("anyOf",):
        old_objects = [o for o in old.get(option_list, []) if "object" in _types(old_root, o)]
        new_objects = [o for o in new.get(option_list, []) if "object" in _types(new_root, o)]
        if len(old_objects) == 1 and len(new_objects) == 1:
            _compare(old_root, old_objects[0], new_root, new_objects[0], where, problems)
