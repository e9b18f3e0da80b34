"""Write the JSON Schema of every event type to ``streams/schemas/`` (``make schemas``).

The committed files are the public contract; a test fails when they and the code disagree, so
this is run only when a schema changes on purpose (and then with a new topic version).
"""

from __future__ import annotations

import json
from pathlib import Path

from streams.events import SCHEMA_NAMES, json_schema


def write_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.v1.json`` for every event type; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, name in SCHEMA_NAMES.items():
        path = directory / f"{name}.v1.json"
        path.write_text(json.dumps(json_schema(event_type), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas(Path(__file__).with_name("schemas")):
        print(path)
