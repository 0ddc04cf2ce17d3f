//! Capabilities compiled into the host. Each implements the same `Capability` trait
//! extensions do and enters the registry through the same boundary object.

mod log;

use pulp_ext_api::CapabilityHandle;

/// The provider name of every built-in capability.
pub const PROVIDER: &str = "pulp";

/// Capabilities every cell gets without declaring them.
pub const ALWAYS_ON: &[&str] = &[log::NAME];

pub fn all() -> Vec<CapabilityHandle> {
    vec![CapabilityHandle::builtin(log::Log).expect("built-in capabilities describe themselves")]
}
