//! The rule-file schema as serde structs (filled in by the rules work).
