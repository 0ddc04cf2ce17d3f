//! What the host counts for `/metrics` (the admin listener), in the
//! Prometheus text format. One set per process: the runtime, the transports
//! and the extension loader record into it wherever they are. Hot paths hold
//! the counters of their cell or import, resolved once, so recording is an
//! atomic add; label lookups happen only on rare paths (failures, restarts).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CellLabel {
    pub cell: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub cell: String,
    /// trap, timeout, exit, init_failed, setup.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImportLabels {
    pub capability: String,
    pub import: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImportFailureLabels {
    pub capability: String,
    pub import: String,
    pub code: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub cell: String,
    /// 2xx, 3xx, 4xx, 5xx (1xx counts as 2xx: a cell cannot send one alone).
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub cell: String,
    /// websocket or sse.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExtensionInfoLabels {
    pub extension: String,
    pub interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExtensionLabel {
    pub extension: String,
}

type Histograms = Family<CellLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Mutex<Registry>,
    pub steps: Family<CellLabel, Counter>,
    pub step_seconds: Histograms,
    pub failures: Family<FailureLabels, Counter>,
    pub restarts: Family<CellLabel, Counter>,
    pub import_calls: Family<ImportLabels, Counter>,
    pub import_failures: Family<ImportFailureLabels, Counter>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub streams: Family<StreamLabels, Gauge>,
    pub memory_pages: Family<CellLabel, Gauge>,
    pub queue_events: Family<CellLabel, Gauge>,
    pub queue_bytes: Family<CellLabel, Gauge>,
    extensions: Family<ExtensionInfoLabels, Gauge>,
    /// The interface of each extension's library loaded last.
    interfaces: Mutex<HashMap<String, String>>,
    pub extension_load_seconds: Family<ExtensionLabel, Gauge<f64, AtomicU64>>,
}

fn step_histogram() -> Histogram {
    // 1 µs to about 16 s.
    Histogram::new(exponential_buckets(1e-6, 4.0, 13))
}

impl Metrics {
    fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(step_histogram),
            failures: Family::default(),
            restarts: Family::default(),
            import_calls: Family::default(),
            import_failures: Family::default(),
            http_requests: Family::default(),
            streams: Family::default(),
            memory_pages: Family::default(),
            queue_events: Family::default(),
            queue_bytes: Family::default(),
            extensions: Family::default(),
            interfaces: Mutex::default(),
            extension_load_seconds: Family::default(),
        };
        {
            let mut registry = metrics.registry.lock().unwrap();
            let pulp = registry.sub_registry_with_prefix("pulp");
            pulp.register(
                "cell_steps",
                "Calls of pulp_step, pulp_on_call included",
                metrics.steps.clone(),
            );
            pulp.register_with_unit(
                "cell_step_duration",
                "How long each call of pulp_step or pulp_on_call took",
                Unit::Seconds,
                metrics.step_seconds.clone(),
            );
            pulp.register(
                "cell_failures",
                "Instances that ended by failing, by kind",
                metrics.failures.clone(),
            );
            pulp.register(
                "cell_restarts",
                "Instances started again after a failure or an exit",
                metrics.restarts.clone(),
            );
            pulp.register(
                "import_calls",
                "Host import calls, by capability and import",
                metrics.import_calls.clone(),
            );
            pulp.register(
                "import_failures",
                "Host import calls that returned a non-zero code",
                metrics.import_failures.clone(),
            );
            pulp.register(
                "http_requests",
                "Requests the listener answered for a cell, by status class",
                metrics.http_requests.clone(),
            );
            pulp.register(
                "open_streams",
                "WebSocket connections and SSE subscribers open now, by cell",
                metrics.streams.clone(),
            );
            pulp.register(
                "cell_memory_pages",
                "The cell's linear memory in 64 KiB pages, after its last step",
                metrics.memory_pages.clone(),
            );
            pulp.register(
                "cell_queue_events",
                "Events waiting in the cell's queue",
                metrics.queue_events.clone(),
            );
            pulp.register_with_unit(
                "cell_queue",
                "Bytes of the events waiting in the cell's queue",
                Unit::Bytes,
                metrics.queue_bytes.clone(),
            );
            pulp.register(
                "extension_info",
                "Extension libraries loaded (1), with the ext-api interface each was built for",
                metrics.extensions.clone(),
            );
            pulp.register_with_unit(
                "extension_load",
                "How long loading each extension library took",
                Unit::Seconds,
                metrics.extension_load_seconds.clone(),
            );
        }
        metrics
    }

    /// The text `/metrics` answers.
    /// Records that `extension`'s library, built for `interface`, is the one
    /// loaded: a reload may bring a build for another interface.
    pub fn extension_loaded(&self, extension: &str, interface: &str) {
        let labels = |interface: String| ExtensionInfoLabels {
            extension: extension.to_owned(),
            interface,
        };
        let mut interfaces = self.interfaces.lock().unwrap();
        if let Some(before) = interfaces.insert(extension.to_owned(), interface.to_owned()) {
            self.extensions.remove(&labels(before));
        }
        self.extensions
            .get_or_create(&labels(interface.to_owned()))
            .set(1);
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry.lock().unwrap())
            .expect("writing into a String cannot fail");
        text
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

pub fn cell(name: &str) -> CellLabel {
    CellLabel {
        cell: name.to_owned(),
    }
}

/// The gauges of a cell's queue, which the queue counts in.
pub fn queue_depth(name: &str) -> crate::runtime::Depth {
    let metrics = get();
    crate::runtime::Depth {
        events: metrics.queue_events.get_or_create_owned(&cell(name)),
        bytes: metrics.queue_bytes.get_or_create_owned(&cell(name)),
    }
}

/// One open WebSocket connection or SSE subscriber, counted while it lives.
pub struct OpenStream(Gauge);

impl OpenStream {
    pub fn new(cell: &str, kind: &'static str) -> OpenStream {
        let gauge = get().streams.get_or_create_owned(&StreamLabels {
            cell: cell.to_owned(),
            kind,
        });
        gauge.inc();
        OpenStream(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
