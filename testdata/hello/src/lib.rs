//! Greets once at init through `demo.greet`, whichever build of it is loaded.

use pulp_guest::{demo, export_cell, log, Cell, Code, Config};

struct Hello;

impl Cell for Hello {
    fn init(_config: Config) -> Result<Self, String> {
        let code = demo::greet("pulp").err().map_or(0, Code::raw);
        log::info(&format!("hello greet returned {code}"));
        Ok(Hello)
    }
}

export_cell!(Hello);
