//! Write Pulp cells in safe Rust.
//!
//! A cell is a `wasm32-wasip1` `cdylib` that implements [`Cell`] and names
//! its type in [`export_cell!`], which generates the exports the host calls
//! (`pulp_alloc`, `pulp_free`, `pulp_init`, `pulp_step`, `pulp_shutdown`).
//! Host imports are wrapped in modules: [`log`] (always available),
//! [`http`] (`transport.http.inbound` and `transport.http.outbound`),
//! [`ws`] (`transport.ws.inbound`), [`sse`] (`transport.sse`), [`fs`]
//! (`storage.fs`), [`sqlite`] (`storage.sqlite`), and [`raw`] for the unchecked
//! declarations. Wrappers for optional extensions are cargo features: `demo`
//! (the example extension's `demo.greet`) and `s3` (`storage.s3`, from the
//! `pulp-ext-s3` extension). The transport modules also hold typed payloads for their
//! events, each naming its kind: `event.decode::<ws::WsFrame>()` when
//! `event.kind() == ws::WsFrame::KIND`; requests decode with
//! `http::Request::from_step(step)`, or in place with `http::request_view(step)`.
//!
//! Imports that return data (`http_fetch`, or an extension's) take two
//! out-pointers: the host allocates the result with `pulp_alloc` and stores
//! its pointer and length there. [`HostBuf::receive`] makes that call and
//! owns the result, freeing it on drop the way `pulp_alloc` allocated it;
//! wrap an extension's import the same way.
//!
//! ```toml
//! # Cargo.toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! pulp-guest = { path = "../guest" }
//! ```
//!
//! ```no_run
//! use pulp_guest::{export_cell, log, Cell, Config, Step};
//!
//! struct Counter {
//!     events: u64,
//! }
//!
//! impl Cell for Counter {
//!     fn init(config: Config) -> Result<Self, String> {
//!         // [config] start = 10 in the manifest.
//!         let start = config.get("start").and_then(|v| v.as_u64()).unwrap_or(0);
//!         log::info(&format!("counter starts at {start}"));
//!         Ok(Counter { events: start })
//!     }
//!
//!     fn step(&mut self, step: &Step) -> i32 {
//!         if let Some(event) = step.event() {
//!             self.events += 1;
//!             log::info(&format!("event {} (#{})", event.kind(), self.events));
//!         }
//!         0
//!     }
//! }
//!
//! export_cell!(Counter);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip1`; the manifest's
//! `wasm` points at `target/wasm32-wasip1/release/<crate>.wasm`.

mod buf;
pub mod call;
mod code;
mod config;
#[cfg(feature = "demo")]
pub mod demo;
mod error;
pub mod fs;
pub mod http;
pub mod log;
pub use pulp_wire::msgpack;
pub mod raw;
#[doc(hidden)]
pub mod rt;
#[cfg(feature = "s3")]
pub mod s3;
pub mod sqlite;
pub mod sse;
mod step;
pub mod ws;

pub use buf::HostBuf;
pub use code::Code;
pub use config::Config;
pub use error::Error;
/// The MessagePack value type [`Config::get`] returns.
pub use rmpv;
pub use step::{Event, Step};

/// A cell's state, from `pulp_init` to `pulp_shutdown`.
pub trait Cell: Sized + 'static {
    /// Builds the cell from the manifest's `[config]`. An error is logged at
    /// level error and makes `pulp_init` fail.
    fn init(config: Config) -> Result<Self, String>;

    /// Handles one tick or event. A non-zero result is logged by the host.
    fn step(&mut self, step: &Step) -> i32 {
        let _ = step;
        0
    }

    /// Serves a call from another cell to `function`, one this cell's
    /// manifest `provides`: the result bytes, or a non-zero code (the caller
    /// then gets code 5). Runs between steps, never during one.
    fn on_call(&mut self, function: &str, args: &[u8]) -> Result<Vec<u8>, i32> {
        let _ = (function, args);
        Err(1)
    }

    /// Called once on orderly shutdown; the cell is dropped afterwards.
    fn shutdown(&mut self) -> i32 {
        0
    }
}

/// Exports the cell ABI for a type implementing [`Cell`]; use once per crate.
#[macro_export]
macro_rules! export_cell {
    ($cell:ty) => {
        const _: () = {
            ::std::thread_local! {
                // wasm32-wasip1 runs one thread, so this is the one instance.
                static CELL: ::core::cell::RefCell<::core::option::Option<$cell>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            #[no_mangle]
            pub extern "C" fn pulp_alloc(size: i32) -> i32 {
                $crate::rt::alloc(size)
            }

            // The exports below are called only by the host, which keeps
            // the buffer contracts of docs/cell-abi.md.

            #[no_mangle]
            pub extern "C" fn pulp_free(ptr: i32, size: i32) {
                // SAFETY: the host frees only what it got from pulp_alloc.
                unsafe { $crate::rt::free(ptr, size) }
            }

            #[no_mangle]
            pub extern "C" fn pulp_init(cfg_ptr: i32, cfg_len: i32) -> i32 {
                // SAFETY: the host wrote the config into a pulp_alloc buffer.
                unsafe { $crate::rt::init::<$cell>(&CELL, cfg_ptr, cfg_len) }
            }

            #[no_mangle]
            pub extern "C" fn pulp_step(in_ptr: i32, in_len: i32) -> i32 {
                // SAFETY: the host wrote the envelope into a pulp_alloc buffer.
                unsafe { $crate::rt::step::<$cell>(&CELL, in_ptr, in_len) }
            }

            #[no_mangle]
            pub extern "C" fn pulp_on_call(
                name_ptr: i32,
                name_len: i32,
                args_ptr: i32,
                args_len: i32,
                resp_ptr_out: i32,
                resp_len_out: i32,
            ) -> i32 {
                // SAFETY: the host wrote the name and arguments into
                // pulp_alloc buffers and passes out-slots it allocated.
                unsafe {
                    $crate::rt::on_call::<$cell>(
                        &CELL,
                        [name_ptr, name_len, args_ptr, args_len],
                        [resp_ptr_out, resp_len_out],
                    )
                }
            }

            #[no_mangle]
            pub extern "C" fn pulp_shutdown() -> i32 {
                $crate::rt::shutdown::<$cell>(&CELL)
            }
        };
    };
}
