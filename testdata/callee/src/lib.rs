//! Provides functions to other cells, each a case the host must handle:
//! `greet` answers, `empty` answers nothing, `boom` traps, `spin` never
//! returns, `back` calls its caller back (a cycle, refused with code 12).

use pulp_guest::{call, export_cell, Cell, Config};

struct Callee;

impl Cell for Callee {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Callee)
    }

    fn on_call(&mut self, function: &str, args: &[u8]) -> Result<Vec<u8>, i32> {
        match function {
            "greet" | "hidden" => Ok([b"hello, ", args].concat()),
            "empty" => Ok(Vec::new()),
            "boom" => panic!("boom requested"),
            #[allow(clippy::empty_loop)]
            "spin" => loop {},
            "back" => Ok(match call::call("caller", "ping", b"") {
                Ok(result) => result.to_vec(),
                Err(code) => format!("code={}", code.raw()).into_bytes(),
            }),
            _ => Err(2),
        }
    }
}

export_cell!(Callee);
