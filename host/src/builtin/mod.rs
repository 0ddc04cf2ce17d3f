//! Capabilities compiled into the host, all in one table: [`BUILTINS`]. Each
//! implements the `Capability` trait extensions do and enters the registry
//! through the same boundary object.
//!
//! A new built-in is its module (in the family it belongs to) and one line in
//! the table.

mod call;
mod log;

use std::sync::Arc;

use pulp_ext_api::{Capability, CapabilityHandle};

use crate::registry::Properties;
use crate::runtime::calls::Directory;
use crate::storage::{Storage, fs, sqlite};
use crate::transport::{ListenerLimits, Transport, http_in, http_out, sse, ws};

/// The provider name of every built-in capability.
pub const PROVIDER: &str = "pulp";

/// What the built-ins share among themselves and with the runtime: the
/// listener's state, the storage quotas, the cells that call each other.
pub struct Services {
    pub transport: Transport,
    pub storage: Storage,
    pub calls: Arc<Directory>,
}

impl Services {
    /// The listener's state on `io`, with `listener` limits, no quotas yet,
    /// and the runtime's directory of `calls`.
    pub fn new(
        io: tokio::runtime::Handle,
        listener: ListenerLimits,
        calls: Arc<Directory>,
    ) -> Result<Services, String> {
        Ok(Services {
            transport: Transport::new(io, listener)?,
            storage: Storage::default(),
            calls,
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
    builtin(ALWAYS_ON, |s| Box::new(call::Call(Arc::clone(&s.calls)))),
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
