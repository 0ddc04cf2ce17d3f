//! Pulp's example extension.
//!
//! - `demo.greet`: `demo_greet(name_ptr, name_len)` logs `hello, <name>!` for the cell;
//!   `demo_noop()` does nothing, to measure what crossing the boundary costs.
//! - `demo.ticker`: an event source. Every `ticker_interval_ms` (from the
//!   `[extension.config]`, default 1000) it queues a `demo.ticker` event
//!   `{seq, cell}` for each cell that declares it and wakes the host, which polls it.

mod ticker;

use pulp_ext_api::{Capability, Code, HostImport};

const PROVIDER: &str = "pulp-ext-demo";

struct Greet;

impl Capability for Greet {
    fn name(&self) -> &str {
        "demo.greet"
    }

    fn provider(&self) -> &str {
        PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        vec![
            HostImport::inputs("demo_greet", |guest, [name]| {
                let name = std::str::from_utf8(name).map_err(|_| Code::DECODE)?;
                if name.is_empty() {
                    return Err(Code::EMPTY);
                }
                tracing::info!("hello, {name}! (cell {})", guest.cell());
                Ok(())
            }),
            HostImport::new("demo_noop", &[], |_, _| Ok(())),
        ]
    }
}

fn capabilities() -> Vec<Box<dyn Capability>> {
    vec![Box::new(Greet), Box::new(ticker::Ticker::default())]
}

pulp_ext_api::export_extension!(capabilities);
