//! The parts of the `omnisql` binary that run in-process elsewhere too (its tests, other tools).

pub mod smoke;
