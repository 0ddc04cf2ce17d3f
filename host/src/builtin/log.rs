//! `log(level, msg_ptr, msg_len)`: the always-on import that writes to the host log.

use pulp_ext_api::{Capability, Code, HostImport, Level, ValType};

pub const NAME: &str = "core.log";

pub struct Log;

impl Capability for Log {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        super::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        vec![HostImport::new(
            "log",
            &[ValType::I32, ValType::I32, ValType::I32],
            |guest, args| {
                let level = Level::from_raw(args.i32(0));
                let bytes = guest.read_arg(args, 1)?;
                let message = std::str::from_utf8(bytes).map_err(|_| Code::DECODE)?;
                let cell = guest.cell();
                let message = crate::logsafe::Escaped(message);
                match level {
                    Level::Trace => tracing::trace!(target: "cell", cell, "{message}"),
                    Level::Debug => tracing::debug!(target: "cell", cell, "{message}"),
                    Level::Info => tracing::info!(target: "cell", cell, "{message}"),
                    Level::Warn => tracing::warn!(target: "cell", cell, "{message}"),
                    Level::Error => tracing::error!(target: "cell", cell, "{message}"),
                }
                Ok(())
            },
        )]
    }
}
