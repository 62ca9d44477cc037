"""Stream schemas, one JSON file per stream."""
