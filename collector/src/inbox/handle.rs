//! [`InboxHandle`]: one inbox store shared by async tasks, with group
//! commit for the delivery lanes' frequent calls.
//!
//! # Group commit
//!
//! Every delivered event costs a verdict and a look for its lane's next
//! event (one op, [`GroupOp::VerdictThenNext`], after a booking). Run one
//! at a time, each is a transaction and an fsync: with many lanes at work
//! the store, not the ERP, sets the pace. [`InboxHandle::grouped`] queues
//! the op instead; the first caller that finds no group running becomes the
//! *leader*: on the blocking pool it takes everything queued, runs it with
//! [`InboxStore::run_group`] (one transaction, one commit), answers each
//! caller, and goes on while ops keep arriving. While one group commits, the
//! next one fills, so the group size follows the load by itself: one op
//! when the collector is quiet (no added latency), dozens under a backlog.
//! A transaction that will be fsynced anyway (it holds a verdict) also
//! takes the ops that arrive while it is open, waiting up to
//! `FOLLOW_WAIT` for each and `HOLD_MAX` in all: a single lane, whose next
//! verdict arrives one ERP round trip after its look was answered early,
//! so shares one fsync among several of its events, as separate lanes do.
//!
//! Invariants:
//! - An answer is sent only after the commit that holds it: a verdict ack
//!   is published only once the verdict is durable, exactly as with one
//!   transaction per verdict. A crash before the commit loses the whole
//!   group, and every event in it is delivered again after the restart (the
//!   ERP de-duplicates by event id). The one exception is the look after a
//!   booking asked for with [`InboxHandle::record_verdict_then_look_ahead`]:
//!   where the backend has one writer it comes as soon as the transaction
//!   made it ([`InboxStore::run_group_early`]), so the lane posts its next
//!   event while the previous verdict's fsync runs, as separate lanes
//!   already overlap; the verdict's own answer still waits for the commit.
//! - At most one leader runs at a time (`running`), so groups are applied in
//!   the order they were formed, and an op queued while a group runs is
//!   taken by the same leader's next turn.
//! - A leader that panics (a bug) clears `running` and drops every queued
//!   op's answer channel on its way out ([`LeaderGuard`]), so waiting callers
//!   get an error instead of hanging.

use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{GroupAnswer, GroupOp, InboxError, InboxStore, NextPending};

/// Where an op's answer goes, after the commit.
type Answer = oneshot::Sender<Result<GroupAnswer, InboxError>>;

/// Where a [`GroupOp::VerdictThenNext`]'s look goes as soon as it is made
/// ([`InboxStore::run_group_early`]), when its caller asked for it.
type Early = Option<oneshot::Sender<Option<NextPending>>>;

/// Ops waiting for the next group, with where to send each answer.
type Queued = Vec<(GroupOp, Answer, Early)>;

/// The group being formed.
#[derive(Debug, Default)]
struct Group {
    queued: Queued,
    /// A leader is running groups.
    running: bool,
    /// Groups run so far (each one transaction).
    groups: u64,
}

/// Shares one inbox store (SQLite [`super::Inbox`] or PostgreSQL
/// [`super::PgInbox`], see [`InboxStore`]) between async tasks,
/// running every call on tokio's blocking pool so the database never stalls
/// the runtime threads.
#[derive(Debug, Clone)]
pub struct InboxHandle {
    inner: Arc<Mutex<Box<dyn InboxStore>>>,
    group: Arc<Mutex<Group>>,
    /// Notified when an op is queued (a leader holding a transaction open
    /// waits on it, see [`lead_groups`]).
    arrived: Arc<Condvar>,
    /// The backend claims lanes ([`InboxStore::hold_lane`] can say no).
    claims: bool,
}

/// Locks, ignoring poison: every critical section here leaves consistent
/// state (a poisoned store lock means a call panicked mid-way; the database
/// rolled its open transaction back, so the connection can be used).
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends a leader's turn even when it panics: clears `running` and drops
/// every queued answer channel (their callers see an error).
struct LeaderGuard(Arc<Mutex<Group>>);

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut g = lock(&self.0);
            g.running = false;
            g.queued.clear();
        }
    }
}

impl InboxHandle {
    /// Wraps an open inbox store.
    pub fn new(store: impl InboxStore + 'static) -> Self {
        Self::from_box(Box::new(store))
    }

    /// Wraps an open inbox store chosen at run time.
    pub fn from_box(store: Box<dyn InboxStore>) -> Self {
        Self {
            claims: store.claims_lanes(),
            inner: Arc::new(Mutex::new(store)),
            group: Arc::new(Mutex::new(Group::default())),
            arrived: Arc::new(Condvar::new()),
        }
    }

    /// True when several collectors may share the store, so delivery must
    /// renew its lane claims ([`InboxStore::hold_lane`]).
    pub fn has_claims(&self) -> bool {
        self.claims
    }

    /// Runs `f` with exclusive access to the inbox on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, InboxError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn InboxStore) -> Result<R, InboxError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(lock(&inner).as_mut()))
            .await
            .map_err(|e| InboxError::Worker(e.to_string()))?
    }

    /// Runs `op` in the next group commit (see the module docs) and returns
    /// its answer once the group's transaction has committed.
    pub async fn grouped(&self, op: GroupOp) -> Result<GroupAnswer, InboxError> {
        self.enqueue(op, None).await.map_err(|_| stopped())?
    }

    /// Queues `op` for the next group (leading it if none runs) and returns
    /// where its answer will come.
    fn enqueue(
        &self,
        op: GroupOp,
        early: Early,
    ) -> oneshot::Receiver<Result<GroupAnswer, InboxError>> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut g = lock(&self.group);
            g.queued.push((op, tx, early));
            !std::mem::replace(&mut g.running, true)
        };
        self.arrived.notify_one();
        if lead {
            let (inner, group, arrived) = (
                Arc::clone(&self.inner),
                Arc::clone(&self.group),
                Arc::clone(&self.arrived),
            );
            // Not awaited: the leader answers through the channels, and
            // keeps going for ops queued after this caller's.
            drop(tokio::task::spawn_blocking(move || {
                lead_groups(&inner, group, &arrived)
            }));
        }
        rx
    }

    /// [`InboxStore::record_verdict`] in a group commit.
    pub async fn record_verdict_grouped(
        &self,
        device: dockline_protocol::DeviceId,
        epoch: u64,
        seq: u64,
        outcome: dockline_protocol::Outcome,
        now_ms: i64,
    ) -> Result<bool, InboxError> {
        match self
            .grouped(GroupOp::Verdict {
                device,
                epoch,
                seq,
                outcome,
                now_ms,
            })
            .await?
        {
            GroupAnswer::Verdict(recorded) => Ok(recorded),
            _ => Err(mismatch()),
        }
    }

    /// [`InboxStore::next_in_lane`] in a group commit.
    pub async fn next_in_lane_grouped(
        &self,
        lane: String,
        now_ms: i64,
        park_max_ms: i64,
    ) -> Result<Option<super::NextPending>, InboxError> {
        match self
            .grouped(GroupOp::NextInLane {
                lane,
                now_ms,
                park_max_ms,
            })
            .await?
        {
            GroupAnswer::Next(next) => Ok(next),
            _ => Err(mismatch()),
        }
    }

    /// [`InboxStore::record_verdict`], then [`InboxStore::next_in_lane`] on
    /// `lane`, in one op of a group commit ([`GroupOp::VerdictThenNext`]),
    /// with the lane's next event handed out as soon as the group's
    /// transaction made it, before the commit where the backend allows it
    /// ([`InboxStore::run_group_early`]); whether the verdict was recorded
    /// comes with the commit, through the returned [`VerdictCommit`]. Ack
    /// the verdict only from there.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_verdict_then_look_ahead(
        &self,
        device: dockline_protocol::DeviceId,
        epoch: u64,
        seq: u64,
        outcome: dockline_protocol::Outcome,
        lane: String,
        now_ms: i64,
        park_max_ms: i64,
    ) -> Result<(Option<NextPending>, VerdictCommit), InboxError> {
        let (early_tx, early_rx) = oneshot::channel();
        let answer = self.enqueue(
            GroupOp::VerdictThenNext {
                device,
                epoch,
                seq,
                outcome,
                lane,
                now_ms,
                park_max_ms,
            },
            Some(early_tx),
        );
        match early_rx.await {
            Ok(next) => Ok((next, VerdictCommit(Commit::Pending(answer)))),
            // No early look (the backend answers after the commit, or the
            // look could not be read): the commit's answer holds both.
            Err(_) => match answer.await.map_err(|_| stopped())?? {
                GroupAnswer::VerdictThenNext(recorded, next) => {
                    Ok((next, VerdictCommit(Commit::Known(recorded))))
                }
                _ => Err(mismatch()),
            },
        }
    }

    /// [`InboxStore::hold_lane`] in a group commit.
    pub async fn hold_lane_grouped(&self, lane: String, now_ms: i64) -> Result<bool, InboxError> {
        match self.grouped(GroupOp::HoldLane { lane, now_ms }).await? {
            GroupAnswer::Held(held) => Ok(held),
            _ => Err(mismatch()),
        }
    }
}

/// Whether a verdict queued by [`InboxHandle::record_verdict_then_look_ahead`]
/// was recorded, known once its group has committed.
#[derive(Debug)]
pub struct VerdictCommit(Commit);

#[derive(Debug)]
enum Commit {
    /// Committed already: whether the verdict was recorded.
    Known(bool),
    /// The group's answer, after its commit.
    Pending(oneshot::Receiver<Result<GroupAnswer, InboxError>>),
}

impl VerdictCommit {
    /// Waits for the commit: true when the verdict was recorded (the row
    /// was still pending), so its ack may go out.
    pub async fn recorded(self) -> Result<bool, InboxError> {
        let answer = match self.0 {
            Commit::Known(recorded) => return Ok(recorded),
            Commit::Pending(answer) => answer,
        };
        match answer.await.map_err(|_| stopped())?? {
            GroupAnswer::Verdict(recorded) | GroupAnswer::VerdictThenNext(recorded, _) => {
                Ok(recorded)
            }
            _ => Err(mismatch()),
        }
    }
}

fn stopped() -> InboxError {
    InboxError::Worker("the inbox's group commit stopped (a panic)".into())
}

fn mismatch() -> InboxError {
    InboxError::Worker("the inbox answered a grouped op with another op's answer".into())
}

/// How long a leader holding a transaction that will be fsynced waits
/// for one more op: about one ERP round trip on a fast link, so a lane's
/// next verdict (its look was answered early) joins the same fsync.
const FOLLOW_WAIT: Duration = Duration::from_micros(400);

/// The longest a leader holds one transaction open for arriving ops
/// (added to the first verdict's ack latency at most).
const HOLD_MAX: Duration = Duration::from_millis(2);

/// The most ops one transaction takes.
const GROUP_MAX: usize = 512;

/// The leader's turn: groups until the queue is empty.
fn lead_groups(inner: &Mutex<Box<dyn InboxStore>>, group: Arc<Mutex<Group>>, arrived: &Condvar) {
    let guard = LeaderGuard(group);
    loop {
        let queued = {
            let mut g = lock(&guard.0);
            if g.queued.is_empty() {
                g.running = false;
                return;
            }
            g.groups += 1;
            std::mem::take(&mut g.queued)
        };
        let started = Instant::now();
        let (mut ops, answer_to, early) = (
            Vec::new(),
            RefCell::new(Vec::new()),
            RefCell::new(Vec::new()),
        );
        for (op, answer, look) in queued {
            ops.push(op);
            answer_to.borrow_mut().push(answer);
            early.borrow_mut().push(look);
        }
        let answers = lock(inner).run_group_early(
            &ops,
            &mut |i, next| {
                if let Some(to) = early.borrow_mut().get_mut(i).and_then(Option::take) {
                    // A caller that went away needs no look.
                    let _ = to.send(next);
                }
            },
            &mut || {
                let held = started.elapsed();
                if held >= HOLD_MAX || answer_to.borrow().len() >= GROUP_MAX {
                    return Vec::new();
                }
                let mut g = lock(&guard.0);
                if g.queued.is_empty() {
                    let wait = FOLLOW_WAIT.min(HOLD_MAX - held);
                    g = arrived
                        .wait_timeout_while(g, wait, |g| g.queued.is_empty())
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                std::mem::take(&mut g.queued)
                    .into_iter()
                    .map(|(op, answer, look)| {
                        answer_to.borrow_mut().push(answer);
                        early.borrow_mut().push(look);
                        op
                    })
                    .collect()
            },
        );
        for (to, answer) in answer_to.into_inner().into_iter().zip(answers) {
            // A caller that went away (shutdown) needs no answer; what was
            // committed stays committed.
            let _ = to.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::Inbox;
    use crate::inbox::tests::{batch, site};

    /// Many lanes at once: every verdict is recorded once and answered,
    /// and the groups hold more than one op (fewer commits than verdicts).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_verdicts_share_commits_and_each_gets_its_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
        let seqs: Vec<u64> = (1..=200).collect();
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &seqs), 1)
            .expect("store");
        let handle = InboxHandle::new(inbox);
        let mut tasks = tokio::task::JoinSet::new();
        for seq in seqs.clone() {
            let h = handle.clone();
            tasks.spawn(async move {
                let device = dockline_protocol::DeviceId::new("hh-01").expect("id");
                let outcome = dockline_protocol::Outcome::Booked {
                    document: format!("DOC-{seq}"),
                };
                let first = h
                    .record_verdict_grouped(device.clone(), 1, seq, outcome.clone(), 2)
                    .await
                    .expect("verdict");
                let again = h
                    .record_verdict_grouped(device, 1, seq, outcome, 3)
                    .await
                    .expect("verdict again");
                (first, again)
            });
        }
        while let Some(done) = tasks.join_next().await {
            assert_eq!(done.expect("task"), (true, false), "recorded once");
        }
        let stats = handle.call(|i| i.stats()).await.expect("stats");
        assert_eq!((stats.booked, stats.pending), (200, 0));
        let g = lock(&handle.group);
        assert!(!g.running, "the leader ended its turn");
        assert!(
            g.groups < 400,
            "{} groups for 400 ops: none shared a commit",
            g.groups
        );
    }

    /// A lane look in a group answers as the plain call does.
    #[tokio::test]
    async fn a_grouped_lane_look_hands_out_the_next_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inbox = Inbox::open(&dir.path().join("inbox.db")).expect("inbox");
        inbox
            .store_batch(&site(), &batch("hh-01", 1, 1, &[1, 2]), 1)
            .expect("store");
        let handle = InboxHandle::new(inbox);
        let next = handle
            .next_in_lane_grouped("device:hh-01".into(), 5, 60_000)
            .await
            .expect("look");
        match next {
            Some(super::super::NextPending::Event(e)) => assert_eq!(e.envelope.seq, 1),
            other => panic!("expected seq 1, got {other:?}"),
        }
    }
}
