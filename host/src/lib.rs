//! The Pulp host: runs WebAssembly cells and gives each only the capabilities its
//! manifest declares. The `pulp` binary is a thin command line over this library.

pub mod admin;
pub mod builtin;
pub mod cli;
pub mod error;
pub mod extensions;
pub mod logsafe;
pub mod manifest;
pub mod metrics;
pub mod msgpack;
#[cfg(test)]
mod proptests;
pub mod registry;
pub mod runtime;
pub mod storage;
#[cfg(test)]
mod testenv;
pub mod transport;
