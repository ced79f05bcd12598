"""Turn CustomResourceDefinitions into the strict JSON schemas kubeconform reads.

    python3 crd_schemas.py OUT_DIR CRD.yaml...

Writes OUT_DIR/<kind lowercased>_<version>.json for every served version, with
``additionalProperties: false`` on every object that lists its properties (kubeconform's strict
mode for built-in kinds does the same), except where the CRD keeps unknown fields on purpose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def main(out: str, *crds: str) -> None:
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    for path in crds:
        for document in yaml.safe_load_all(Path(path).read_text()):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            kind = document["spec"]["names"]["kind"].lower()
            for version in document["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                name = target / f"{kind}_{version['name']}.json"
                name.write_text(json.dumps(schema, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
