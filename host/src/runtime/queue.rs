//! A cell's bounded event queue. Senders wake the cell's thread with
//! `Thread::unpark`, a single atomic swap unless the thread is asleep; a
//! blocking channel receive would take a lock around every wake-up instead,
//! and those locks were a large share of the host's futex calls under load.

use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SendError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use super::events::CellMsg;

/// A queue holding up to `capacity` messages.
pub fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = sync_channel(capacity);
    let reader = Arc::new(OnceLock::new());
    (
        QueueSender {
            tx: Some(tx),
            reader: Arc::clone(&reader),
        },
        QueueReceiver { rx, reader },
    )
}

pub struct QueueSender {
    /// Always `Some` until dropped: dropped before the reader is woken, so a
    /// reader woken by the last sender sees the queue closed.
    tx: Option<SyncSender<CellMsg>>,
    /// The thread that receives, once it has started to.
    reader: Arc<OnceLock<Thread>>,
}

impl QueueSender {
    fn tx(&self) -> &SyncSender<CellMsg> {
        self.tx.as_ref().expect("present until drop")
    }

    fn wake(&self) {
        if let Some(thread) = self.reader.get() {
            thread.unpark();
        }
    }

    pub fn try_send(&self, msg: CellMsg) -> Result<(), TrySendError<CellMsg>> {
        self.tx().try_send(msg)?;
        self.wake();
        Ok(())
    }

    /// Blocks while the queue is full.
    pub fn send(&self, msg: CellMsg) -> Result<(), SendError<CellMsg>> {
        self.tx().send(msg)?;
        self.wake();
        Ok(())
    }
}

impl Clone for QueueSender {
    fn clone(&self) -> Self {
        QueueSender {
            tx: self.tx.clone(),
            reader: Arc::clone(&self.reader),
        }
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.wake();
    }
}

pub struct QueueReceiver {
    rx: Receiver<CellMsg>,
    reader: Arc<OnceLock<Thread>>,
}

impl QueueReceiver {
    /// The next message, waiting until `deadline` (forever when `None`).
    /// Always called from the same thread, which senders then wake.
    pub fn recv_until(&self, deadline: Option<Instant>) -> Result<CellMsg, RecvTimeoutError> {
        self.reader.get_or_init(std::thread::current);
        loop {
            match self.rx.try_recv() {
                Ok(msg) => return Ok(msg),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            // A wake-up between the check above and parking is not lost: it
            // leaves a token that makes the park return at once.
            match deadline {
                None => std::thread::park(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    std::thread::park_timeout(left);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::events::Delivery;

    fn event(kind: &str) -> CellMsg {
        CellMsg::Event(Delivery {
            kind: kind.to_owned(),
            payload: Vec::new(),
            source: None,
        })
    }

    fn kind(msg: CellMsg) -> String {
        match msg {
            CellMsg::Event(delivery) => delivery.kind,
            CellMsg::Shutdown => "shutdown".to_owned(),
        }
    }

    #[test]
    fn a_parked_reader_wakes_for_each_message_and_sees_the_queue_close() {
        let (tx, rx) = queue(2);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match rx.recv_until(None) {
                    Ok(msg) => got.push(kind(msg)),
                    Err(e) => return (got, e),
                }
            }
        });
        for name in ["a", "b", "c", "d"] {
            // Gives the reader time to park between messages.
            std::thread::sleep(Duration::from_millis(20));
            tx.send(event(name)).unwrap();
        }
        let second = tx.clone();
        second.try_send(CellMsg::Shutdown).unwrap();
        drop(tx);
        drop(second);
        let (got, end) = reader.join().unwrap();
        assert_eq!(got, ["a", "b", "c", "d", "shutdown"]);
        assert_eq!(end, RecvTimeoutError::Disconnected);
    }

    #[test]
    fn a_full_queue_refuses_and_a_deadline_ends_the_wait() {
        let (tx, rx) = queue(1);
        tx.try_send(event("a")).unwrap();
        assert!(matches!(
            tx.try_send(event("b")),
            Err(TrySendError::Full(_))
        ));
        let soon = Some(Instant::now() + Duration::from_millis(10));
        assert_eq!(kind(rx.recv_until(soon).unwrap()), "a");
        assert_eq!(rx.recv_until(soon).err(), Some(RecvTimeoutError::Timeout));
        drop(rx);
        assert!(matches!(
            tx.try_send(event("c")),
            Err(TrySendError::Disconnected(_))
        ));
    }
}
