#!/usr/bin/env python3
"""Validates OCSF events (JSON lines on stdin) against the OCSF 1.8.0 JSON schema of their class.

The schemas come from the PyPI package ocsf-json-schema (which bundles schema.ocsf.io's export of
each OCSF version) and are checked with the PyPI package jsonschema (draft 2020-12). Prints one
line per event and exits non-zero if any event does not validate.
"""
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

VERSION = "1.8.0"


def main() -> int:
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=VERSION))
    validators = {}
    failed = 0
    count = 0
    for number, line in enumerate(sys.stdin, start=1):
        line = line.strip()
        if not line:
            continue
        event = json.loads(line)
        count += 1
        class_uid = event.get("class_uid")
        if class_uid not in validators:
            name = schema.lookup_class_name_from_uid(class_uid)
            class_schema = schema.get_class_schema(name)
            jsonschema.Draft202012Validator.check_schema(class_schema)
            validators[class_uid] = (name, jsonschema.Draft202012Validator(class_schema))
        name, validator = validators[class_uid]
        errors = sorted(validator.iter_errors(event), key=lambda e: list(e.path))
        if errors:
            failed += 1
            for error in errors:
                path = "/".join(str(p) for p in error.path)
                print(f"event {number} ({name}): {path}: {error.message}")
        else:
            print(f"event {number} ({name}): valid")
    print(f"{count} events, {failed} invalid, OCSF {VERSION}")
    return 1 if failed or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
