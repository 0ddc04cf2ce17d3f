//! Capabilities compiled into the host, all in one table: [`BUILTINS`]. Each
//! implements the `Capability` trait extensions do and enters the registry
//! through the same boundary object.
//!
//! A new built-in is its module (in the family it belongs to) and one line in
//! the table.

mod log;

use pulp_ext_api::{Capability, CapabilityHandle};

use crate::registry::Properties;
use crate::storage::{Storage, fs, sqlite};
use crate::transport::{ListenerLimits, Transport, http_in, http_out, sse, ws};

/// The provider name of every built-in capability.
pub const PROVIDER: &str = "pulp";

/// What the built-ins share among themselves: the listener's state, and the
/// storage quotas.
pub struct Services {
    pub transport: Transport,
    pub storage: Storage,
}

impl Services {
    /// The listener's state on `io`, with `listener` limits, and no quotas yet.
    pub fn new(io: tokio::runtime::Handle, listener: ListenerLimits) -> Result<Services, String> {
        Ok(Services {
            transport: Transport::new(io, listener)?,
            storage: Storage::default(),
        })
    }
}

/// One built-in capability: how to make it, and what the host must know of it
/// before any cell runs.
pub struct Builtin {
    pub properties: Properties,
    make: fn(&Services) -> Box<dyn Capability>,
}

const PLAIN: Properties = Properties {
    always_on: false,
    listens: false,
};
const ALWAYS_ON: Properties = Properties {
    always_on: true,
    listens: false,
};
const LISTENS: Properties = Properties {
    always_on: false,
    listens: true,
};

const fn builtin(properties: Properties, make: fn(&Services) -> Box<dyn Capability>) -> Builtin {
    Builtin { properties, make }
}

/// Every built-in capability.
pub const BUILTINS: &[Builtin] = &[
    builtin(ALWAYS_ON, |_| Box::new(log::Log)),
    builtin(LISTENS, |s| {
        Box::new(http_in::HttpInbound(s.transport.shared()))
    }),
    builtin(PLAIN, |s| {
        Box::new(http_out::HttpOutbound(s.transport.shared()))
    }),
    builtin(LISTENS, |s| Box::new(ws::WsInbound(s.transport.shared()))),
    builtin(LISTENS, |s| {
        Box::new(sse::ServerSentEvents(s.transport.shared()))
    }),
    builtin(PLAIN, |s| Box::new(fs::Files::new(s.storage.quotas()))),
    builtin(PLAIN, |s| {
        Box::new(sqlite::Databases::new(s.storage.quotas()))
    }),
];

/// Every built-in, made and wrapped for the registry.
pub fn all(services: &Services) -> Vec<(CapabilityHandle, Properties)> {
    BUILTINS
        .iter()
        .map(|builtin| {
            let handle = CapabilityHandle::builtin_boxed((builtin.make)(services))
                .expect("built-in capabilities describe themselves");
            (handle, builtin.properties)
        })
        .collect()
}
