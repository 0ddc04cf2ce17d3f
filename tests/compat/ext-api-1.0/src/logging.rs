//! Forwards an extension's `tracing` events to the host's log.
//!
//! `tracing` keeps its dispatcher in statics, and a library has its own copy of them,
//! so the host's subscriber never sees an extension's events. [`export_extension!`]
//! installs this forwarder as the library's global subscriber instead.
//!
//! [`export_extension!`]: crate::export_extension

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Subscriber;
use tracing::{Event, Metadata};

use crate::host::{HostHandle, Level};

struct Forwarder {
    host: HostHandle,
    max: tracing::Level,
}

fn to_tracing(level: Level) -> tracing::Level {
    match level {
        Level::Trace => tracing::Level::TRACE,
        Level::Debug => tracing::Level::DEBUG,
        Level::Info => tracing::Level::INFO,
        Level::Warn => tracing::Level::WARN,
        Level::Error => tracing::Level::ERROR,
    }
}

fn from_tracing(level: &tracing::Level) -> Level {
    match *level {
        tracing::Level::TRACE => Level::Trace,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::INFO => Level::Info,
        tracing::Level::WARN => Level::Warn,
        _ => Level::Error,
    }
}

/// Renders an event as `message key=value ...`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

impl Subscriber for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= &self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }

    // Spans are not forwarded: only events reach the host's log.
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        line.message.push_str(&line.fields);
        let metadata = event.metadata();
        self.host.log(
            from_tracing(metadata.level()),
            metadata.target(),
            &line.message,
        );
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Makes this library's `tracing` events go to the host. Later calls are no-ops.
pub(crate) fn install(host: HostHandle) {
    let forwarder = Forwarder {
        host,
        max: to_tracing(host.max_level()),
    };
    let _ = tracing::subscriber::set_global_default(forwarder);
}
