//! Ouli's sans-IO core. See the crate README for the guide.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod engine;
pub mod h1;
pub mod message;
pub mod proxy;
pub mod store;
