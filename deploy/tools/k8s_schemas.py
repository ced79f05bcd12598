"""Kubernetes JSON schemas for kubeconform, from the kubernetes-validate package.

    python k8s_schemas.py SOURCE_DIR OUT_DIR

kubernetes-validate ships strict schemas whose references point into a shared
``/api/_definitions.json``; kubeconform wants each kind's schema standalone. This writes one
standalone file per kind (every reference inlined; a reference back into itself, which only
the CRD meta-schema has, is left open).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# How a file refers to a definition, and how definitions refer to each other.
PREFIXES = ("/api/_definitions.json#/$defs/", "#/$defs/")


def main(source: str, out: str) -> None:
    source_dir, out_dir = Path(source), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    definitions = json.loads((source_dir / "_definitions.json").read_text())["$defs"]

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            prefix = next((p for p in PREFIXES if isinstance(ref, str) and ref.startswith(p)), "")
            if prefix:
                name = ref[len(prefix) :]
                if name in seen:
                    return {}
                rest = {k: inline(v, seen) for k, v in node.items() if k != "$ref"}
                return {**inline(definitions[name], (*seen, name)), **rest}
            return {key: inline(value, seen) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        return node

    for path in source_dir.glob("*.json"):
        if path.name.startswith("_") or path.name == "all.json":
            continue
        schema = json.loads(path.read_text())
        if "kind" not in schema.get("properties", {}):
            continue  # not a kind of its own (a part of one)
        # Its "$id" (a kubernetes.io address) would make kubeconform's compiler look there.
        schema.pop("$id", None)
        (out_dir / path.name).write_text(json.dumps(inline(schema, ())))


if __name__ == "__main__":
    main(*sys.argv[1:])
