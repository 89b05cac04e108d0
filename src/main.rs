//! The `immune` command: parses flags and calls the library.
fn main() {}
