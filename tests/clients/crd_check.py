#!/usr/bin/env python3
"""Validates custom resources against the CRDs that define them.

  crd_check.py CRD_DIR FILE...

CRD_DIR holds CustomResourceDefinition YAML files (e.g. Karpenter's pkg/apis/crds/, KEDA's
config/crd/bases/, from the projects' own repositories; not shipped here). Each document of each
FILE whose apiVersion and kind a CRD of CRD_DIR serves is checked against that version's
openAPIV3Schema with JSON Schema (jsonschema): types, required fields, enums, patterns, formats,
and unknown fields where the schema does not preserve them. CEL rules (x-kubernetes-validations)
are not evaluated. Documents of other kinds are skipped and counted. Exit 1 on any error, with
file, kind, name and path of each.
"""
import glob
import os
import sys

import jsonschema
import yaml


def closed(schema):
    """The schema with additionalProperties: false wherever Kubernetes prunes unknown fields."""
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) if k in ("items", "additionalProperties", "not") else v for k, v in schema.items()}
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [closed(s) for s in out[key]]
    if "properties" in out:
        out["properties"] = {k: closed(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def schemas(crd_dir):
    found = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml")) + glob.glob(os.path.join(crd_dir, "*.yml"))):
        for doc in yaml.safe_load_all(open(path)):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for v in spec["versions"]:
                schema = closed(v["schema"]["openAPIV3Schema"])
                # metadata is the API server's (ObjectMeta), not the CRD's.
                schema.get("properties", {}).pop("metadata", None)
                found[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = schema
    return found


def main(crd_dir, files):
    known = schemas(crd_dir)
    if not known:
        print(f"no CustomResourceDefinition in {crd_dir}", file=sys.stderr)
        return 2
    checked, skipped, errors = 0, 0, []
    for path in files:
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            schema = known.get((doc.get("apiVersion"), doc.get("kind")))
            if schema is None:
                skipped += 1
                continue
            checked += 1
            body = {k: v for k, v in doc.items() if k != "metadata"}
            for e in jsonschema.Draft4Validator(schema).iter_errors(body):
                where = "/".join(str(p) for p in e.absolute_path)
                errors.append(f"{path}: {doc['kind']} {doc['metadata'].get('name')}: {where}: {e.message}")
    for e in errors:
        print(e, file=sys.stderr)
    print(f"crd check: {checked} objects valid against {len(known)} CRD versions, {skipped} of other kinds skipped"
          if not errors else f"crd check: {len(errors)} errors in {checked} objects")
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
