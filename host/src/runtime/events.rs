//! Capability events: each capability that some cell declares gets a pump thread
//! that sleeps until the capability wakes the host, then drains its `poll` into the
//! target cells' queues.

use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use pulp_ext_api::{DeliverError, HostServices, Level};

use super::queue::QueueSender;
use crate::msgpack;
use crate::registry::Entry;

pub struct Delivery {
    pub kind: String,
    pub payload: Vec<u8>,
    /// The capability to `finalize` after the step, with the event's id.
    pub source: Option<(Arc<Entry>, u64)>,
}

/// A cell an event may go to.
#[derive(Clone)]
pub struct Route {
    pub cell: Arc<str>,
    pub max_message_bytes: u64,
    pub queue: QueueSender,
}

/// What a capability is lent for one cell that declares it: the capability's log
/// and wake, and delivery straight into that cell's queue.
pub struct CellLink {
    entry: Arc<Entry>,
    route: Route,
}

impl CellLink {
    /// Leaked like the capability's own link: a library may keep the handle.
    pub fn leak(entry: Arc<Entry>, route: Route) -> &'static CellLink {
        Box::leak(Box::new(CellLink { entry, route }))
    }
}

impl HostServices for CellLink {
    fn log(&self, level: Level, target: &str, message: &str) {
        self.entry.link.log(level, target, message)
    }

    fn max_level(&self) -> Level {
        self.entry.link.max_level()
    }

    fn wake(&self) {
        self.entry.link.wake()
    }

    fn deliver(&self, kind: &str, payload: &[u8], id: u64) -> Result<(), DeliverError> {
        if !self.route.accepts(&self.entry, kind, payload, id) {
            return Err(DeliverError::Invalid);
        }
        let delivery = Delivery {
            kind: kind.to_owned(),
            payload: payload.to_vec(),
            source: Some((Arc::clone(&self.entry), id)),
        };
        match self.route.queue.try_send(delivery) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(DeliverError::Full),
            Err(TrySendError::Disconnected(_)) => Err(DeliverError::Gone),
        }
    }
}

impl Route {
    /// Whether an event's payload may go to this cell: one MessagePack value, within
    /// its `max_message_bytes`. A refusal is logged here, once for both paths.
    fn accepts(&self, entry: &Entry, kind: &str, payload: &[u8], id: u64) -> bool {
        let problem = if payload.len() as u64 > self.max_message_bytes {
            format!(
                "{} bytes, over max_message_bytes = {}",
                payload.len(),
                self.max_message_bytes
            )
        } else if let Err(e) = msgpack::check_one_value(payload) {
            e
        } else {
            return true;
        };
        tracing::error!(
            capability = entry.name(),
            origin = %entry.origin,
            cell = &*self.cell,
            "event {id} (kind {kind}) refused: {problem}"
        );
        false
    }
}

#[derive(Default)]
struct Flags {
    pending: bool,
    stop: bool,
}

pub struct Pump {
    flags: Arc<(Mutex<Flags>, Condvar)>,
    /// Started by the first wake: most capabilities (every built-in) never poll.
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Pump {
    /// Makes `entry`'s wake start (once) and then signal a pump thread. `routes`
    /// lists the cells that declare the capability, in manifest order; the first is
    /// where events without a cell go.
    pub fn start(entry: Arc<Entry>, routes: Vec<Route>) -> Pump {
        let flags = Arc::new((Mutex::new(Flags::default()), Condvar::new()));
        let thread: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::default();
        let waker_flags = Arc::clone(&flags);
        let waker_thread = Arc::clone(&thread);
        let name = format!("pump-{}", entry.name());
        entry.link.set_waker(Box::new(move || {
            let (lock, signal) = &*waker_flags;
            lock.lock().unwrap().pending = true;
            signal.notify_one();
            let mut thread = waker_thread.lock().unwrap();
            if thread.is_none() {
                let (entry, routes, flags) =
                    (Arc::clone(&entry), routes.clone(), Arc::clone(&waker_flags));
                let spawned = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || pump(&entry, &routes, &flags))
                    .expect("spawn an event pump");
                *thread = Some(spawned);
            }
        }));
        Pump { flags, thread }
    }

    pub fn stop(self) {
        let (lock, signal) = &*self.flags;
        lock.lock().unwrap().stop = true;
        signal.notify_one();
        if let Some(thread) = self.thread.lock().unwrap().take() {
            let _ = thread.join();
        }
    }
}

fn pump(entry: &Arc<Entry>, routes: &[Route], flags: &(Mutex<Flags>, Condvar)) {
    let (lock, signal) = flags;
    loop {
        {
            let guard = lock.lock().unwrap();
            let mut guard = signal.wait_while(guard, |f| !f.pending && !f.stop).unwrap();
            if guard.stop {
                return;
            }
            guard.pending = false;
        }
        loop {
            match entry.handle.poll() {
                Ok(Some(event)) => deliver(entry, routes, event),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(capability = entry.name(), origin = %entry.origin, "poll failed: {e}");
                    break;
                }
            }
        }
    }
}

fn deliver(entry: &Arc<Entry>, routes: &[Route], event: pulp_ext_api::StepEvent) {
    let capability = entry.name();
    let route = if event.cell.is_empty() {
        routes.first()
    } else {
        routes.iter().find(|r| *r.cell == *event.cell)
    };
    let Some(route) = route else {
        tracing::error!(
            capability,
            origin = %entry.origin,
            "event {} (kind {}) is for cell {:?}, which does not declare {capability}; dropped",
            event.id,
            event.kind,
            event.cell
        );
        return;
    };
    if !route.accepts(entry, &event.kind, &event.payload, event.id) {
        return;
    }
    let id = event.id;
    let delivery = Delivery {
        kind: event.kind,
        payload: event.payload,
        source: Some((Arc::clone(entry), id)),
    };
    // Blocks while the cell's queue is full: the capability keeps its events until
    // the cell catches up, instead of the host buffering without bound.
    if route.queue.send(delivery).is_err() {
        tracing::warn!(
            capability,
            cell = &*route.cell,
            "cell has stopped; event {id} dropped"
        );
    }
}
