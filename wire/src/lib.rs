//! The cell-facing wire format of Pulp, written once for both sides: the host
//! (and the extension interface) and the guest SDK. It builds natively and for
//! `wasm32-wasip1`.
//!
//! - [`Code`]: the `i32` every host import returns, with the codes all
//!   capabilities share and those of `storage.s3` ([`code::s3`]).
//! - [`Level`]: the levels of the `log` import.
//! - [`envelope`]: the buffer `pulp_step` receives, header and `StepEvent`.
//! - [`msgpack`]: one borrowing MessagePack reader, the checks the host runs on
//!   payloads, and the map writer both sides use.
//! - [`http`]: the `http.request` event and the `http_respond` reply, read
//!   in place.
//! - [`payload`]: the other requests and events of the built-in capabilities.

pub mod code;
pub mod envelope;
pub mod http;
mod level;
pub mod msgpack;
pub mod payload;
#[cfg(test)]
mod proptests;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use code::Code;
pub use level::Level;
