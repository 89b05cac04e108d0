//! Statistics: pure functions over numbers (filled in by the statistics work).
