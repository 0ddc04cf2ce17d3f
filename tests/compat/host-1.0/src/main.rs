//! Loads the library named on the command line the way a host that only knows
//! interface 1.0 does, and prints what that host would say of it.

use pulp_ext_api::{HostHandle, HostServices, Level};

struct Quiet;

impl HostServices for Quiet {
    fn log(&self, _level: Level, _target: &str, _message: &str) {}

    fn max_level(&self) -> Level {
        Level::Error
    }

    fn wake(&self) {}
}

static HOST: Quiet = Quiet;

fn main() {
    let path = std::env::args_os()
        .nth(1)
        .expect("usage: pulp-compat-host LIBRARY");
    match pulp_ext_api::load_library(path.as_ref(), HostHandle::new(&HOST)) {
        Ok(capabilities) => {
            for capability in capabilities {
                println!("loaded {}", capability.name());
            }
        }
        Err(e) => {
            println!("refused: {e}");
            std::process::exit(1);
        }
    }
}
