//! A cell's event queue, bounded both in events and in bytes. Senders wake the
//! cell's thread with `Thread::unpark`, a single atomic swap unless the thread
//! is asleep; a blocking channel receive would take a lock around every wake-up
//! instead, and those locks were a large share of the host's futex calls under
//! load. Shutdown is a flag beside the queue, so a cell waiting out a restart
//! backoff sees it without draining the events queued for its next instance.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::calls::CallRequest;
use super::events::Delivery;

/// How long a blocked sender sleeps before looking again, should the
/// receiver's notification slip past it.
const RECHECK: Duration = Duration::from_millis(50);

struct Shared {
    /// The thread that receives, once it has started to.
    reader: OnceLock<Thread>,
    /// Bytes of the events queued now.
    bytes: AtomicU64,
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
        if let Some(thread) = self.reader.get() {
            thread.unpark();
        }
    }
}

/// The bytes an event holds while it waits.
fn size(delivery: &Delivery) -> u64 {
    (delivery.kind.len() + delivery.payload.len()) as u64
}

/// A queue holding up to `capacity` events and `max_bytes` of them.
pub fn queue(capacity: usize, max_bytes: u64) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = sync_channel(capacity);
    let shared = Arc::new(Shared {
        reader: OnceLock::new(),
        bytes: AtomicU64::new(0),
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
    fn tx(&self) -> &SyncSender<Delivery> {
        self.tx.as_ref().expect("present until drop")
    }

    /// Queues `delivery` unless the queue is full, in events or in bytes.
    pub fn try_send(&self, delivery: Delivery) -> Result<(), TrySendError<Delivery>> {
        let bytes = size(&delivery);
        let before = self.shared.bytes.fetch_add(bytes, Ordering::SeqCst);
        if before + bytes > self.shared.max_bytes {
            self.shared.bytes.fetch_sub(bytes, Ordering::SeqCst);
            return Err(TrySendError::Full(delivery));
        }
        if let Err(e) = self.tx().try_send(delivery) {
            self.shared.bytes.fetch_sub(bytes, Ordering::SeqCst);
            return Err(e);
        }
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

/// What the cell's thread gets from its queue.
pub enum Next {
    Call(CallRequest),
    Event(Delivery),
    Shutdown,
}

pub struct QueueReceiver {
    rx: Receiver<Delivery>,
    shared: Arc<Shared>,
}

impl QueueReceiver {
    /// The next event, or shutdown once no event is left, waiting until
    /// `deadline` (forever when `None`). Always called from the same thread,
    /// which senders then wake.
    pub fn recv_until(&self, deadline: Option<Instant>) -> Result<Next, RecvTimeoutError> {
        self.shared.reader.get_or_init(std::thread::current);
        loop {
            let call = self
                .shared
                .calls
                .lock()
                .unwrap()
                .as_mut()
                .and_then(VecDeque::pop_front);
            if let Some(call) = call {
                return Ok(Next::Call(call));
            }
            match self.rx.try_recv() {
                Ok(delivery) => {
                    self.shared
                        .bytes
                        .fetch_sub(size(&delivery), Ordering::SeqCst);
                    if self.shared.blocked.load(Ordering::SeqCst) > 0 {
                        let _guard = self.shared.room.lock().unwrap();
                        self.shared.freed.notify_all();
                    }
                    return Ok(Next::Event(delivery));
                }
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            if self.shared.shutdown.load(Ordering::SeqCst) {
                return Ok(Next::Shutdown);
            }
            if !self.park_until(deadline) {
                return Err(RecvTimeoutError::Timeout);
            }
        }
    }

    /// Waits until `deadline` without taking events or calls; true if
    /// shutdown was asked.
    pub fn shutdown_before(&self, deadline: Instant) -> bool {
        self.shared.reader.get_or_init(std::thread::current);
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                return true;
            }
            if !self.park_until(Some(deadline)) {
                return false;
            }
        }
    }

    /// Parks until woken or `deadline`; false once the deadline has passed. A
    /// wake-up between a check and parking is not lost: it leaves a token that
    /// makes the park return at once.
    fn park_until(&self, deadline: Option<Instant>) -> bool {
        match deadline {
            None => std::thread::park(),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                std::thread::park_timeout(left);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload_len: usize) -> Delivery {
        Delivery {
            kind: kind.to_owned(),
            payload: vec![0; payload_len],
            source: None,
        }
    }

    fn kind(next: Next) -> String {
        match next {
            Next::Event(delivery) => delivery.kind,
            Next::Shutdown => "shutdown".to_owned(),
            Next::Call(call) => format!("call {}", call.function),
        }
    }

    #[test]
    fn a_parked_reader_wakes_for_each_event_then_shutdown_then_close() {
        let (tx, rx) = queue(2, 1 << 20);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match rx.recv_until(None) {
                    Ok(Next::Shutdown) if got.last().is_some_and(|k| k == "shutdown") => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(next) => got.push(kind(next)),
                    Err(e) => return (got, e),
                }
            }
        });
        for name in ["a", "b", "c", "d"] {
            // Gives the reader time to park between events.
            std::thread::sleep(Duration::from_millis(20));
            assert!(tx.send(event(name, 1)).is_ok());
        }
        std::thread::sleep(Duration::from_millis(20));
        let second = tx.clone();
        second.request_shutdown();
        std::thread::sleep(Duration::from_millis(20));
        drop(tx);
        drop(second);
        let (got, end) = reader.join().unwrap();
        assert_eq!(got, ["a", "b", "c", "d", "shutdown"]);
        assert_eq!(end, RecvTimeoutError::Disconnected);
    }

    #[test]
    fn full_in_events_or_in_bytes_refuses_and_a_deadline_ends_the_wait() {
        let (tx, rx) = queue(1, 1 << 20);
        tx.try_send(event("a", 1)).unwrap();
        assert!(matches!(
            tx.try_send(event("b", 1)),
            Err(TrySendError::Full(_))
        ));
        let soon = Some(Instant::now() + Duration::from_millis(10));
        assert_eq!(kind(rx.recv_until(soon).unwrap()), "a");
        assert_eq!(rx.recv_until(soon).err(), Some(RecvTimeoutError::Timeout));

        let (tx, rx) = queue(100, 1000);
        tx.try_send(event("a", 599)).unwrap();
        assert!(matches!(
            tx.try_send(event("b", 400)),
            Err(TrySendError::Full(_))
        ));
        tx.try_send(event("c", 399)).unwrap();
        assert_eq!(kind(rx.recv_until(soon).unwrap()), "a");
        // Taking an event gives its bytes back.
        tx.try_send(event("d", 599)).unwrap();
        drop(rx);
        assert!(matches!(
            tx.try_send(event("", 0)),
            Err(TrySendError::Disconnected(_))
        ));
    }

    #[test]
    fn a_blocked_sender_goes_on_when_the_reader_frees_room() {
        let (tx, rx) = queue(100, 100);
        tx.try_send(event("a", 90)).unwrap();
        let sender = std::thread::spawn(move || tx.send(event("b", 90)).is_ok());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(kind(rx.recv_until(None).unwrap()), "a");
        assert_eq!(kind(rx.recv_until(None).unwrap()), "b");
        assert!(sender.join().unwrap());
    }

    #[test]
    fn shutdown_is_seen_while_waiting_without_taking_events() {
        let (tx, rx) = queue(10, 1000);
        tx.try_send(event("kept", 1)).unwrap();
        assert!(!rx.shutdown_before(Instant::now() + Duration::from_millis(10)));
        tx.request_shutdown();
        assert!(rx.shutdown_before(Instant::now() + Duration::from_secs(60)));
        // The event waits for the next instance, ahead of the shutdown.
        assert_eq!(kind(rx.recv_until(None).unwrap()), "kept");
        assert_eq!(kind(rx.recv_until(None).unwrap()), "shutdown");
    }
}
