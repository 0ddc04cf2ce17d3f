//! The workers that run cells. A cell is a task: woken when work arrives for
//! it, queued until a worker is free, run by one worker at a time, so its
//! steps stay serialized while the number of threads does not follow the
//! number of cells.
//!
//! A worker can be held for long by a cell: a blocking host call, a call to
//! another cell, or a runaway step waiting for its timeout. So a scheduler
//! thread watches the run queue: when tasks wait and no worker has taken one
//! for `STUCK`, it adds a worker, up to the pool's maximum. Added workers leave
//! after `RETIRE` without work. The same thread fires the timers of cells
//! that tick or wait out a restart backoff.

use std::collections::{BinaryHeap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long queued tasks wait with no worker taking any before one is added.
const STUCK: Duration = Duration::from_millis(2);
/// How long an added worker waits for work before it leaves.
const RETIRE: Duration = Duration::from_secs(5);

/// What a task's turn asks for next.
pub enum Turn {
    /// Nothing to do until woken.
    Idle,
    /// Nothing to do until woken or `Instant`.
    Sleep(Instant),
    /// More to do at once; other tasks go first.
    Yield,
    /// Never run again.
    Done,
}

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const NOTIFIED: u8 = 2;
const DONE: u8 = 4;

type Body = Box<dyn FnMut() -> Turn + Send>;

/// One schedulable unit: a cell.
pub struct Task {
    name: Arc<str>,
    /// IDLE, or RUNNING and/or NOTIFIED, or DONE. A task is in the run queue
    /// exactly when NOTIFIED is set and RUNNING is not.
    state: AtomicU8,
    /// Taken only by the worker running the task, so never contended.
    body: Mutex<Option<Body>>,
    /// The deadline of the timer armed for the task, as nanoseconds from the
    /// pool's start; 0 when none.
    timer: AtomicU64,
    pool: Weak<Shared>,
}

impl Task {
    /// Makes the task run soon; a no-op when it is already queued, or done.
    pub fn wake(self: &Arc<Self>) {
        if self.state.fetch_or(NOTIFIED, Ordering::AcqRel) == IDLE
            && let Some(pool) = self.pool.upgrade()
        {
            pool.push(Arc::clone(self));
        }
    }

    fn run(self: Arc<Self>, pool: &Shared) {
        self.state.store(RUNNING, Ordering::Release);
        let turn = {
            let mut body = self.body.lock().unwrap();
            let turn = match body.as_mut() {
                Some(run) => std::panic::catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
                    tracing::error!(
                        cell = &*self.name,
                        "the host panicked running this cell; it is stopped"
                    );
                    Turn::Done
                }),
                None => Turn::Done,
            };
            if matches!(turn, Turn::Done) {
                // Drops what the cell holds; wakes after this find no body.
                body.take();
            }
            turn
        };
        match turn {
            Turn::Done => self.state.store(DONE, Ordering::Release),
            Turn::Yield => {
                self.state.store(NOTIFIED, Ordering::Release);
                pool.push(self);
            }
            Turn::Idle | Turn::Sleep(_) => {
                if let Turn::Sleep(at) = turn {
                    pool.arm(&self, at);
                }
                if self
                    .state
                    .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // Woken while it ran.
                    self.state.store(NOTIFIED, Ordering::Release);
                    pool.push(self);
                }
            }
        }
    }
}

struct Timer {
    at: u64,
    task: Arc<Task>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Earliest first in the max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Arc<Task>>,
    timers: BinaryHeap<Timer>,
    workers: usize,
    idle: usize,
    /// Idle workers already woken for a queued task: a push counts on an
    /// idle worker only when one is left unclaimed.
    claimed: usize,
    /// Tasks taken from the queue so far: unchanged over `STUCK` while tasks
    /// wait means every worker is held.
    taken: u64,
    /// The scheduler thread is watching for held workers, or has been told
    /// to: pushes need not wake it.
    watching: bool,
    closed: bool,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    scheduler: Condvar,
    origin: Instant,
    core: usize,
    max: usize,
}

impl Shared {
    fn push(&self, task: Arc<Task>) {
        let mut state = self.state.lock().unwrap();
        state.queue.push_back(task);
        if state.idle > state.claimed {
            state.claimed += 1;
            self.work.notify_one();
        } else if !state.watching {
            state.watching = true;
            self.scheduler.notify_one();
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_nanos() as u64).max(1)
    }

    fn arm(&self, task: &Arc<Task>, at: Instant) {
        let at = self.nanos(at);
        if task.timer.swap(at, Ordering::AcqRel) == at {
            return;
        }
        let mut state = self.state.lock().unwrap();
        let earliest = state.timers.peek().is_none_or(|t| at < t.at);
        state.timers.push(Timer {
            at,
            task: Arc::clone(task),
        });
        if earliest {
            self.scheduler.notify_one();
        }
    }

    fn spawn_worker(self: &Arc<Self>, state: &mut State) -> std::io::Result<()> {
        let extra = state.workers >= self.core;
        let shared = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("pulp-worker".into())
            .spawn(move || shared.work(extra))?;
        state.workers += 1;
        state.threads.retain(|t| !t.is_finished());
        state.threads.push(thread);
        Ok(())
    }

    fn work(&self, extra: bool) {
        let mut state = self.state.lock().unwrap();
        loop {
            let Some(task) = state.queue.pop_front() else {
                if state.closed {
                    break;
                }
                state.idle += 1;
                let timed_out = if extra {
                    let (next, wait) = self.work.wait_timeout(state, RETIRE).unwrap();
                    state = next;
                    wait.timed_out() && state.queue.is_empty()
                } else {
                    state = self.work.wait(state).unwrap();
                    false
                };
                state.idle -= 1;
                // Whatever woke it, it looks at the queue next: it answers a claim.
                state.claimed = state.claimed.saturating_sub(1);
                if timed_out {
                    break;
                }
                continue;
            };
            state.taken += 1;
            drop(state);
            task.run(self);
            state = self.state.lock().unwrap();
        }
        state.workers -= 1;
    }

    /// Fires timers, and adds workers while queued tasks wait on held ones.
    fn schedule(self: &Arc<Self>) {
        let mut state = self.state.lock().unwrap();
        // Since when, and at which `taken`, tasks have waited with no idle worker.
        let mut starved_since: Option<(u64, u64)> = None;
        loop {
            if state.closed {
                return;
            }
            let now = self.nanos(Instant::now());
            while state.timers.peek().is_some_and(|t| t.at <= now) {
                let timer = state.timers.pop().expect("peeked");
                // A timer replaced by a later arm is stale.
                if timer
                    .task
                    .timer
                    .compare_exchange(timer.at, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    drop(state);
                    timer.task.wake();
                    state = self.state.lock().unwrap();
                }
            }
            let starved = !state.queue.is_empty() && state.idle == state.claimed;
            starved_since = match starved_since {
                _ if !starved => None,
                Some((since, taken)) if taken == state.taken => {
                    if now - since >= STUCK.as_nanos() as u64 && state.workers < self.max {
                        if let Err(e) = self.spawn_worker(&mut state) {
                            tracing::warn!("cannot add a worker thread: {e}");
                        }
                        Some((now, state.taken))
                    } else {
                        Some((since, taken))
                    }
                }
                _ => Some((now, state.taken)),
            };
            // While some worker runs, it looks every `STUCK` instead of being
            // woken by pushes: under load that is fewer wakes than pushes
            // finding every worker taken.
            let busy = state.idle < state.workers;
            state.watching = starved || busy;
            let check = match starved_since {
                Some((since, _)) => Some(since + STUCK.as_nanos() as u64),
                None => busy.then_some(now + STUCK.as_nanos() as u64),
            };
            let wake_at = match (state.timers.peek().map(|t| t.at), check) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            state = match wake_at {
                None => self.scheduler.wait(state).unwrap(),
                Some(at) => {
                    let wait = Duration::from_nanos(at.saturating_sub(now));
                    self.scheduler.wait_timeout(state, wait).unwrap().0
                }
            };
        }
    }
}

/// The worker pool and its scheduler thread.
pub struct Pool {
    shared: Arc<Shared>,
    scheduler: Option<JoinHandle<()>>,
}

impl Pool {
    /// `core` workers that stay, up to `max` in all while workers are held.
    pub fn new(core: usize, max: usize) -> std::io::Result<Pool> {
        let core = core.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            work: Condvar::new(),
            scheduler: Condvar::new(),
            origin: Instant::now(),
            core,
            max: max.max(core),
        });
        {
            let mut state = shared.state.lock().unwrap();
            for _ in 0..core {
                shared.spawn_worker(&mut state)?;
            }
        }
        let scheduling = Arc::clone(&shared);
        let scheduler = std::thread::Builder::new()
            .name("pulp-scheduler".into())
            .spawn(move || scheduling.schedule())?;
        Ok(Pool {
            shared,
            scheduler: Some(scheduler),
        })
    }

    /// A task running `body` on this pool's workers; it runs once woken.
    pub fn task(&self, name: Arc<str>, body: impl FnMut() -> Turn + Send + 'static) -> Arc<Task> {
        Arc::new(Task {
            name,
            state: AtomicU8::new(IDLE),
            body: Mutex::new(Some(Box::new(body))),
            timer: AtomicU64::new(0),
            pool: Arc::downgrade(&self.shared),
        })
    }

    /// Worker threads now, busy or idle.
    pub fn workers(&self) -> usize {
        self.shared.state.lock().unwrap().workers
    }
}

impl Drop for Pool {
    /// Workers finish the tasks already queued, then every thread ends.
    fn drop(&mut self) {
        let threads = {
            let mut state = self.shared.state.lock().unwrap();
            state.closed = true;
            state.timers.clear();
            std::mem::take(&mut state.threads)
        };
        self.shared.work.notify_all();
        self.shared.scheduler.notify_one();
        // The last cell to finish may drop the pool from its worker.
        let me = std::thread::current().id();
        for thread in threads.into_iter().chain(self.scheduler.take()) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    /// A task that holds its worker until the sender is used or dropped.
    fn holder(pool: &Pool) -> (Arc<Task>, mpsc::Sender<()>) {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let task = pool.task("holder".into(), move || {
            let _ = release_rx.lock().unwrap().recv();
            Turn::Done
        });
        (task, release_tx)
    }

    #[test]
    fn a_task_never_runs_on_two_workers_at_once_and_no_wake_is_lost() {
        let pool = Pool::new(4, 4).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most_running = Arc::new(AtomicUsize::new(0));
        let wakes = Arc::new(AtomicUsize::new(0));
        // The wakes counted when the latest turn began.
        let seen = Arc::new(AtomicUsize::new(0));
        let (r, m, w, s) = (
            Arc::clone(&running),
            Arc::clone(&most_running),
            Arc::clone(&wakes),
            Arc::clone(&seen),
        );
        // Asserting inside the body would prove nothing: the pool catches
        // a task's panic. The counters are read by the test thread.
        let task = pool.task("t".into(), move || {
            m.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            s.store(w.load(Ordering::SeqCst), Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(200));
            r.fetch_sub(1, Ordering::SeqCst);
            Turn::Idle
        });
        let wakers: Vec<_> = (0..4)
            .map(|_| {
                let (task, wakes) = (Arc::clone(&task), Arc::clone(&wakes));
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        wakes.fetch_add(1, Ordering::SeqCst);
                        task.wake();
                    }
                })
            })
            .collect();
        for w in wakers {
            w.join().unwrap();
        }
        // A turn began after the last wake: none was folded away unseen.
        let end = Instant::now() + Duration::from_secs(10);
        while seen.load(Ordering::SeqCst) < 800 {
            assert!(Instant::now() < end, "a wake was lost");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            most_running.load(Ordering::SeqCst),
            1,
            "two workers ran the task"
        );
    }

    #[test]
    fn held_workers_get_company_and_timers_fire() {
        let pool = Pool::new(1, 8).unwrap();
        let (blocker, release_tx) = holder(&pool);
        blocker.wake();
        // The only core worker is held; this task still runs.
        let (ran_tx, ran_rx) = mpsc::channel();
        let mut armed = false;
        let sleeper = pool.task("sleeper".into(), move || {
            if !armed {
                armed = true;
                return Turn::Sleep(Instant::now() + Duration::from_millis(20));
            }
            ran_tx.send(()).unwrap();
            Turn::Done
        });
        sleeper.wake();
        ran_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the timer fired and a worker was added");
        assert!(pool.workers() >= 2);
        release_tx.send(()).unwrap();
    }

    #[test]
    fn a_panicking_task_is_done_and_the_worker_lives_on() {
        let pool = Pool::new(1, 1).unwrap();
        let bad = pool.task("bad".into(), || panic!("boom"));
        bad.wake();
        let (tx, rx) = mpsc::channel();
        let good = pool.task("good".into(), move || {
            tx.send(()).unwrap();
            Turn::Done
        });
        good.wake();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        bad.wake();
        assert_eq!(pool.workers(), 1);
    }

    #[test]
    fn a_task_may_drop_the_last_reference_to_its_pool() {
        let pool = Arc::new(Pool::new(1, 1).unwrap());
        let (tx, rx) = mpsc::channel();
        let mut held = Some(Arc::clone(&pool));
        let task = pool.task("last".into(), move || {
            drop(held.take());
            tx.send(()).unwrap();
            Turn::Done
        });
        drop(pool);
        task.wake();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn a_task_queued_behind_one_that_holds_the_last_idle_worker_gets_another() {
        for _ in 0..20 {
            let pool = Pool::new(1, 2).unwrap();
            let (held, release_tx) = holder(&pool);
            let (ran_tx, ran_rx) = mpsc::channel();
            let other = pool.task("other".into(), move || {
                ran_tx.send(()).unwrap();
                Turn::Done
            });
            while pool.shared.state.lock().unwrap().idle == 0 {
                std::thread::yield_now();
            }
            // Both are queued before the one idle worker wakes for the first.
            held.wake();
            other.wake();
            ran_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the second task waited for the held worker");
            release_tx.send(()).unwrap();
        }
    }
}
