//! Loading rule files: the one place that touches YAML (filled in by the rules work).
