//! Grows its memory until the host refuses (max_memory_pages = 64), then
//! reports where it stopped and idles.

use core::arch::wasm32::{memory_grow, memory_size};

use pulp_guest::{export_cell, log, Cell, Config};

struct MemoryBomb;

impl Cell for MemoryBomb {
    fn init(_config: Config) -> Result<Self, String> {
        while memory_grow::<0>(1) != usize::MAX {}
        log::info(&format!(
            "memory-bomb refused at pages={}",
            memory_size::<0>()
        ));
        Ok(MemoryBomb)
    }
}

export_cell!(MemoryBomb);
