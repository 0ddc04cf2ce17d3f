//! Checks the config encoding and every step envelope, and writes to WASI
//! stdout/stderr, so tests can read from the host log what the host sent.

use std::time::{SystemTime, UNIX_EPOCH};

use pulp_guest::msgpack::map_entries;
use pulp_guest::{export_cell, log, Cell, Config, Step};
use serde::Deserialize;

const DAY_NS: u64 = 24 * 60 * 60 * 1_000_000_000;

#[derive(Deserialize)]
struct Settings {
    greeting: String,
    count: i64,
    ratio: f64,
    enabled: bool,
    tags: Vec<String>,
    nested: Nested,
}

#[derive(Deserialize)]
struct Nested {
    depth: i64,
}

struct Heartbeat {
    init_ns: u64,
    last_call: u64,
    last_time_ns: u64,
    calls: u64,
}

impl Cell for Heartbeat {
    fn init(config: Config) -> Result<Self, String> {
        println!("heartbeat stdout line");
        eprintln!("heartbeat stderr line");
        if config.is_empty() {
            log::info("config empty");
        } else {
            let s: Settings = config.decode()?;
            log::info(&format!(
                "config greeting={} count={} ratio={} enabled={} tags={} depth={}",
                s.greeting,
                s.count,
                s.ratio,
                s.enabled,
                s.tags.join(","),
                s.nested.depth
            ));
            log::info(&format!(
                "config count-marker={:02x} ratio-marker={:02x}",
                marker(&config, "count")?,
                marker(&config, "ratio")?
            ));
        }
        let init_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| format!("clock before 1970: {e}"))?
            .as_nanos() as u64;
        Ok(Heartbeat {
            init_ns,
            last_call: 0,
            last_time_ns: 0,
            calls: 0,
        })
    }

    fn step(&mut self, step: &Step) -> i32 {
        let verdict = self.check(step);
        self.last_call = step.call();
        self.last_time_ns = step.time_ns();
        self.calls += 1;
        let status = match verdict {
            Ok(()) => {
                log::info(&format!("heartbeat call={} envelope=ok", step.call()));
                0
            }
            Err(reason) => {
                log::error(&format!(
                    "heartbeat call={} envelope=bad: {reason}",
                    step.call()
                ));
                1
            }
        };
        if let Some(event) = step.event() {
            log::info(&format!("heartbeat event kind={}", event.kind()));
        }
        status
    }

    fn shutdown(&mut self) -> i32 {
        log::info(&format!("heartbeat shutdown calls={}", self.calls));
        0
    }
}

impl Heartbeat {
    fn check(&self, step: &Step) -> Result<(), String> {
        let expected = self.last_call + 1;
        if step.call() != expected {
            return Err(format!("call number {} expected {expected}", step.call()));
        }
        if step.time_ns().abs_diff(self.init_ns) > DAY_NS {
            return Err(format!(
                "time_ns {} more than a day from init time {}",
                step.time_ns(),
                self.init_ns
            ));
        }
        if step.time_ns() < self.last_time_ns {
            return Err(format!(
                "time_ns {} before the previous step's {}",
                step.time_ns(),
                self.last_time_ns
            ));
        }
        if step.payload_len() as usize != step.raw_payload().len() {
            return Err(format!(
                "payload_len {} but {} payload bytes",
                step.payload_len(),
                step.raw_payload().len()
            ));
        }
        Ok(())
    }
}

/// The MessagePack marker byte (the first byte) of a top-level config value,
/// which tells which integer or float width the host encoded.
fn marker(config: &Config, key: &str) -> Result<u8, String> {
    map_entries(config.raw())?
        .into_iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, value)| value.first().copied())
        .ok_or_else(|| format!("config has no {key}"))
}

export_cell!(Heartbeat);
