//! A cell's event queue, bounded both in events and in bytes. Senders wake the
//! cell's task, which a worker then runs (`pool`); a wake is one atomic
//! operation while the task is already queued or running. Shutdown is a flag
//! beside the queue, so a cell waiting out a restart backoff sees it without
//! draining the events queued for its next instance.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::calls::CallRequest;
use super::events::Delivery;
use super::pool::Task;
use prometheus_client::metrics::gauge::Gauge;

/// How long a blocked sender sleeps before looking again, should the
/// receiver's notification slip past it.
const RECHECK: Duration = Duration::from_millis(50);

struct Shared {
    /// The task that receives, once it is made.
    reader: OnceLock<Weak<Task>>,
    /// What is queued now: the metrics' gauges are the queue's own counters.
    depth: Depth,
    max_bytes: u64,
    shutdown: AtomicBool,
    /// Senders blocked in `send`, woken when the receiver frees room.
    blocked: AtomicUsize,
    room: Mutex<()>,
    freed: Condvar,
    /// Calls from other cells, served before events: their callers are
    /// blocked. `None` once the receiver is gone.
    calls: Mutex<Option<VecDeque<CallRequest>>>,
}

impl Shared {
    fn wake_reader(&self) {
        if let Some(task) = self.reader.get().and_then(Weak::upgrade) {
            task.wake();
        }
    }
}

/// The bytes an event holds while it waits.
fn size(delivery: &Delivery) -> i64 {
    (delivery.kind.len() + delivery.payload.len()) as i64
}

/// Events and bytes waiting in a queue.
#[derive(Default)]
pub struct Depth {
    pub events: Gauge,
    pub bytes: Gauge,
}

/// A queue holding up to `capacity` events and `max_bytes` of them, counted in `depth`.
pub fn queue(capacity: usize, max_bytes: u64, depth: Depth) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = sync_channel(capacity);
    let shared = Arc::new(Shared {
        reader: OnceLock::new(),
        depth,
        max_bytes,
        shutdown: AtomicBool::new(false),
        blocked: AtomicUsize::new(0),
        room: Mutex::new(()),
        freed: Condvar::new(),
        calls: Mutex::new(Some(VecDeque::new())),
    });
    (
        QueueSender {
            tx: Some(tx),
            shared: Arc::clone(&shared),
        },
        QueueReceiver { rx, shared },
    )
}

pub struct QueueSender {
    /// Always `Some` until dropped: dropped before the reader is woken, so a
    /// reader woken by the last sender sees the queue closed.
    tx: Option<SyncSender<Delivery>>,
    shared: Arc<Shared>,
}

impl QueueSender {
    /// Senders wake `task`, the receiver's, from now on.
    pub fn wakes(&self, task: &Arc<Task>) {
        let _ = self.shared.reader.set(Arc::downgrade(task));
    }

    fn tx(&self) -> &SyncSender<Delivery> {
        self.tx.as_ref().expect("present until drop")
    }

    /// Queues `delivery` unless the queue is full, in events or in bytes.
    pub fn try_send(&self, delivery: Delivery) -> Result<(), TrySendError<Delivery>> {
        let bytes = size(&delivery);
        let depth = &self.shared.depth;
        let before = depth.bytes.inc_by(bytes) as u64;
        if before + bytes as u64 > self.shared.max_bytes {
            depth.bytes.dec_by(bytes);
            return Err(TrySendError::Full(delivery));
        }
        if let Err(e) = self.tx().try_send(delivery) {
            depth.bytes.dec_by(bytes);
            return Err(e);
        }
        depth.events.inc();
        self.shared.wake_reader();
        Ok(())
    }

    /// Waits while the queue is full; fails once the cell is gone.
    pub fn send(&self, mut delivery: Delivery) -> Result<(), Delivery> {
        loop {
            match self.try_send(delivery) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(d)) => return Err(d),
                Err(TrySendError::Full(d)) => delivery = d,
            }
            self.shared.blocked.fetch_add(1, Ordering::SeqCst);
            let guard = self.shared.room.lock().unwrap();
            let _ = self.shared.freed.wait_timeout(guard, RECHECK).unwrap();
            self.shared.blocked.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Queues a call from another cell; given back when the cell is gone.
    pub fn call(&self, request: CallRequest) -> Result<(), CallRequest> {
        match self.shared.calls.lock().unwrap().as_mut() {
            Some(calls) => calls.push_back(request),
            None => return Err(request),
        }
        self.shared.wake_reader();
        Ok(())
    }

    /// Asks the cell to shut down once the events already queued are handled
    /// (or at once, while it waits to restart).
    pub fn request_shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.wake_reader();
    }
}

impl Clone for QueueSender {
    fn clone(&self) -> Self {
        QueueSender {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.shared.wake_reader();
    }
}

impl Drop for QueueReceiver {
    /// Calls still queued, and any that come later, fail at once: their
    /// callers see the reply channel closed.
    fn drop(&mut self) {
        self.shared.calls.lock().unwrap().take();
    }
}

/// What the cell's task gets from its queue.
pub enum Next {
    Call(CallRequest),
    Event(Delivery),
    /// Shutdown was asked and no event is left, or every sender is gone.
    Shutdown,
}

pub struct QueueReceiver {
    rx: Receiver<Delivery>,
    shared: Arc<Shared>,
}

impl QueueReceiver {
    /// The next call, else the next event, else shutdown if asked; `None`
    /// when there is nothing to do yet.
    pub fn try_next(&self) -> Option<Next> {
        let call = self
            .shared
            .calls
            .lock()
            .unwrap()
            .as_mut()
            .and_then(VecDeque::pop_front);
        if let Some(call) = call {
            return Some(Next::Call(call));
        }
        match self.rx.try_recv() {
            Ok(delivery) => {
                self.shared.depth.bytes.dec_by(size(&delivery));
                self.shared.depth.events.dec();
                if self.shared.blocked.load(Ordering::SeqCst) > 0 {
                    let _guard = self.shared.room.lock().unwrap();
                    self.shared.freed.notify_all();
                }
                Some(Next::Event(delivery))
            }
            Err(TryRecvError::Disconnected) => Some(Next::Shutdown),
            Err(TryRecvError::Empty) => self.shutdown_asked().then_some(Next::Shutdown),
        }
    }

    /// Whether shutdown was asked, events still queued or not.
    pub fn shutdown_asked(&self) -> bool {
        self.shared.shutdown.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::{Pool, Turn};
    use super::*;
    use std::sync::mpsc;

    fn event(kind: &str, payload_len: usize) -> Delivery {
        Delivery {
            kind: kind.to_owned(),
            payload: vec![0; payload_len],
            source: None,
        }
    }

    fn kind(next: Option<Next>) -> String {
        match next {
            Some(Next::Event(delivery)) => delivery.kind,
            Some(Next::Shutdown) => "shutdown".to_owned(),
            Some(Next::Call(call)) => format!("call {}", call.function),
            None => "nothing".to_owned(),
        }
    }

    #[test]
    fn an_idle_task_wakes_for_each_event_then_shutdown() {
        let pool = Pool::new(1, 1).unwrap();
        let (tx, rx) = queue(2, 1 << 20, Depth::default());
        let (got_tx, got) = mpsc::channel();
        let task = pool.task("reader".into(), move || {
            while let Some(next) = rx.try_next() {
                let shutdown = matches!(next, Next::Shutdown);
                got_tx.send(kind(Some(next))).unwrap();
                if shutdown {
                    return Turn::Done;
                }
            }
            Turn::Idle
        });
        tx.wakes(&task);
        let wait = || got.recv_timeout(Duration::from_secs(10)).unwrap();
        for name in ["a", "b", "c", "d"] {
            // Each event finds the task idle.
            assert!(tx.send(event(name, 1)).is_ok());
            assert_eq!(wait(), name);
        }
        tx.request_shutdown();
        assert_eq!(wait(), "shutdown");
    }

    #[test]
    fn full_in_events_or_in_bytes_refuses_and_taking_gives_room_back() {
        let (tx, rx) = queue(1, 1 << 20, Depth::default());
        tx.try_send(event("a", 1)).unwrap();
        assert!(matches!(
            tx.try_send(event("b", 1)),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(kind(rx.try_next()), "a");
        assert_eq!(kind(rx.try_next()), "nothing");

        let depth = Depth::default();
        let (events, bytes) = (depth.events.clone(), depth.bytes.clone());
        let (tx, rx) = queue(100, 1000, depth);
        tx.try_send(event("a", 599)).unwrap();
        assert!(matches!(
            tx.try_send(event("b", 400)),
            Err(TrySendError::Full(_))
        ));
        tx.try_send(event("c", 399)).unwrap();
        assert_eq!((events.get(), bytes.get()), (2, 1000));
        assert_eq!(kind(rx.try_next()), "a");
        assert_eq!((events.get(), bytes.get()), (1, 400));
        tx.try_send(event("d", 599)).unwrap();
        drop(rx);
        assert!(matches!(
            tx.try_send(event("", 0)),
            Err(TrySendError::Disconnected(_))
        ));
    }

    #[test]
    fn every_sender_gone_reads_as_shutdown() {
        let (tx, rx) = queue(10, 1000, Depth::default());
        tx.try_send(event("last", 1)).unwrap();
        drop(tx);
        assert_eq!(kind(rx.try_next()), "last");
        assert_eq!(kind(rx.try_next()), "shutdown");
    }

    #[test]
    fn a_blocked_sender_goes_on_when_the_reader_frees_room() {
        let (tx, rx) = queue(100, 100, Depth::default());
        tx.try_send(event("a", 90)).unwrap();
        let sender = std::thread::spawn(move || tx.send(event("b", 90)).is_ok());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(kind(rx.try_next()), "a");
        assert!(sender.join().unwrap());
        assert_eq!(kind(rx.try_next()), "b");
    }

    #[test]
    fn shutdown_is_seen_without_taking_events_and_comes_after_them() {
        let (tx, rx) = queue(10, 1000, Depth::default());
        tx.try_send(event("kept", 1)).unwrap();
        assert!(!rx.shutdown_asked());
        tx.request_shutdown();
        assert!(rx.shutdown_asked());
        // The event waits for the next instance, ahead of the shutdown.
        assert_eq!(kind(rx.try_next()), "kept");
        assert_eq!(kind(rx.try_next()), "shutdown");
    }
}
