//! placeholder
pub mod fabric;
