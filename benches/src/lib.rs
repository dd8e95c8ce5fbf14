//! Benchmarks of plexus against peers live in `benches/benches/`; this crate has no code of its own.
