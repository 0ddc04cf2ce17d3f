//! Uses the example extension: `demo.greet` at init, `demo.ticker` events.

use pulp_guest::{demo, export_cell, log, Cell, Code, Config, Step};
use serde::Deserialize;

#[derive(Deserialize)]
struct Settings {
    name: String,
}

/// The `demo.ticker` payload; its `cell` field is not needed here.
#[derive(Deserialize)]
struct Ticker {
    seq: u64,
}

struct Greeter;

impl Cell for Greeter {
    fn init(config: Config) -> Result<Self, String> {
        let settings: Settings = config.decode()?;
        let code = demo::greet(&settings.name).err().map_or(0, Code::raw);
        log::info(&format!("greet returned {code}"));
        Ok(Greeter)
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(event) = step.event().filter(|e| e.kind() == "demo.ticker") else {
            return 0;
        };
        match event.decode::<Ticker>() {
            Ok(ticker) => {
                log::info(&format!("ticker seq={}", ticker.seq));
                0
            }
            Err(err) => {
                log::error(&err.to_string());
                1
            }
        }
    }
}

export_cell!(Greeter);
