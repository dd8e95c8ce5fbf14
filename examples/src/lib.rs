//! The runnable examples of plexus live in `examples/examples/`; this crate has no API.
//!
//! `cargo run --example route_guide` and `cargo run --release --example quickstart`, from
//! the repository root.
