//! CloudEvents batches for the webhook adapter (with `[erp.webhook]
//! batch_max` above 1): ready events of distinct lanes share one signed
//! `application/cloudevents-batch+json` request.
//!
//! # How batches form
//!
//! [`crate::delivery`] runs one task per lane, and a lane task has at most
//! one event at the adapter at a time. Each [`Batcher::deliver`] call queues
//! its event and waits for its own answer. One task forms batches: it takes
//! a request permit (at most `erp.concurrency` requests in flight), then
//! every event queued by then, up to `batch_max`, of distinct lanes
//! ([`next_batch`]; an event whose lane is already in the batch stays queued,
//! first in line for the next one). There is no timer: while every permit
//! is busy, events pile up, so batches grow exactly when the ERP is the
//! bottleneck, and an idle ERP gets each event at once (a batch of one).
//! Delivery lets `concurrency × batch_max` lanes wait at the adapter so
//! that full batches can form ([`crate::erp::ErpAdapter::events_per_request`]).
//!
//! # What an answer means
//!
//! A receiver takes or refuses a batch as a whole, so its answer is every
//! event's answer (each goes through [`crate::delivery::policy::decide`] on its own
//! lane: 2xx books all, 5xx and timeouts retry each, 429/503 pause the
//! endpoint). Except when the answer may be about one event and not the
//! others ([`splits`]: a 400, 409, 413, 422 … or a 2xx carrying an error):
//! then each event of the batch is sent again alone (a batch of one), so a
//! bad event is dead-lettered by itself and its neighbours are booked.
//!
//! Lane order holds because a batch never holds two events of one lane and
//! a lane's next event is only queued after its previous one was answered.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::warn;

use super::cloudevents;
use super::{BATCH_CONTENT_TYPE, Target};
use crate::erp::Attempt;
use crate::erp::outcome::{AttemptOutcome, BodyClass, TransportError};

/// One event waiting for a batch.
struct Queued {
    lane: String,
    id: String,
    body: Vec<u8>,
    reply: oneshot::Sender<Attempt>,
}

/// Forms and sends batches; one per adapter.
#[derive(Debug)]
pub(crate) struct Batcher {
    queue: mpsc::UnboundedSender<Queued>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("lane", &self.lane)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the batch-forming task on the current tokio runtime; it ends
    /// when the batcher is dropped.
    pub(crate) fn start(target: Arc<Target>, batch_max: usize, concurrency: usize) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        tokio::spawn(form_batches(rx, target, batch_max.max(1), permits));
        Self { queue }
    }

    /// Sends one event (structured JSON `body`, CloudEvents `id`, its lane)
    /// in the next batch; its attempt as the batch's answer says.
    pub(crate) async fn deliver(&self, lane: String, id: String, body: Vec<u8>) -> Attempt {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            lane,
            id,
            body,
            reply,
        };
        if self.queue.send(queued).is_err() {
            return not_sent("the batch sender has stopped");
        }
        answer
            .await
            .unwrap_or_else(|_| not_sent("the batch sender dropped the event"))
    }
}

/// An attempt that never left (safe to retry with any key).
fn not_sent(why: &str) -> Attempt {
    Attempt {
        outcome: AttemptOutcome::Transport {
            kind: TransportError::Connect,
            detail: format!("webhook batch not sent: {why}"),
        },
        request: "(no request)".into(),
    }
}

async fn form_batches(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    target: Arc<Target>,
    batch_max: usize,
    permits: Arc<Semaphore>,
) {
    let mut held: VecDeque<Queued> = VecDeque::new();
    loop {
        // The permit first: while all are taken, events gather in the queue
        // and the next batch takes them together.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        if held.is_empty() {
            match rx.recv().await {
                Some(q) => held.push_back(q),
                None => return,
            }
        }
        while let Ok(q) = rx.try_recv() {
            held.push_back(q);
        }
        let batch = next_batch(&mut held, batch_max, |q| q.lane.as_str());
        let target = Arc::clone(&target);
        tokio::spawn(async move {
            send(&target, batch).await;
            drop(permit);
        });
    }
}

/// Takes the next batch from the front of `held`: up to `max` items of
/// distinct lanes, in queue order; the rest stay queued in their order.
fn next_batch<T>(held: &mut VecDeque<T>, max: usize, lane: impl Fn(&T) -> &str) -> Vec<T> {
    let mut lanes = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = VecDeque::with_capacity(held.len());
    while let Some(item) = held.pop_front() {
        if batch.len() < max && lanes.insert(lane(&item).to_owned()) {
            batch.push(item);
        } else {
            rest.push_back(item);
        }
    }
    *held = rest;
    batch
}

/// True when a batch's answer may concern some of its events only, so each
/// must be sent alone to learn which: a 4xx about the content (400, 409,
/// 412, 413, 422, …, or a 404 naming a missing reference) or a 2xx whose
/// body carries an error. Answers about the endpoint (401, 403, 404, 405,
/// 410, 428; 408, 425, 429; 5xx; transport errors) hold for every event.
pub(crate) fn splits(outcome: &AttemptOutcome) -> bool {
    let AttemptOutcome::Response(r) = outcome else {
        return false;
    };
    match r.status {
        200..=299 => matches!(r.class, Some(BodyClass::RpcError { .. })),
        401 | 403 | 405 | 408 | 410 | 425 | 428 | 429 => false,
        404 => r.class.is_some(),
        400..=499 => true,
        _ => false,
    }
}

/// POSTs `batch` as one signed request and answers each event.
async fn send(target: &Target, batch: Vec<Queued>) {
    let attempt = post_batch(target, &batch).await;
    if batch.len() > 1 && splits(&attempt.outcome) {
        let status = match &attempt.outcome {
            AttemptOutcome::Response(r) => r.status,
            _ => 0,
        };
        warn!(
            events = batch.len(),
            status, "ERP refused a batch; sending its events one by one to find which"
        );
        for q in batch {
            let alone = post_batch(target, std::slice::from_ref(&q)).await;
            // The lane may have stopped waiting (shutdown); its row stays pending.
            let _ = q.reply.send(alone);
        }
        return;
    }
    for q in batch {
        let _ = q.reply.send(attempt.clone());
    }
}

async fn post_batch(target: &Target, batch: &[Queued]) -> Attempt {
    let ids: Vec<&str> = batch.iter().map(|q| q.id.as_str()).collect();
    let bodies: Vec<&[u8]> = batch.iter().map(|q| q.body.as_slice()).collect();
    let key = cloudevents::batch_id(&ids);
    let body = cloudevents::cloudevent_batch_body(&bodies);
    let mut attempt = target.post(&key, body, BATCH_CONTENT_TYPE).await;
    attempt.request = format!("{} ({} events)", attempt.request, batch.len());
    attempt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erp::outcome::Response;

    #[test]
    fn a_batch_holds_one_event_per_lane_and_keeps_the_rest_in_order() {
        let mut held: VecDeque<(&str, u32)> =
            [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("d", 1)]
                .into_iter()
                .collect();
        let batch = next_batch(&mut held, 3, |x| x.0);
        assert_eq!(batch, vec![("a", 1), ("b", 1), ("c", 1)]);
        assert_eq!(
            held.iter().copied().collect::<Vec<_>>(),
            vec![("a", 2), ("b", 2), ("d", 1)]
        );
        let batch = next_batch(&mut held, 10, |x| x.0);
        assert_eq!(batch, vec![("a", 2), ("b", 2), ("d", 1)]);
        assert!(held.is_empty());
        assert!(next_batch(&mut held, 10, |x| x.0).is_empty());
    }

    #[test]
    fn content_refusals_split_a_batch_and_endpoint_answers_do_not() {
        let response = |status, class| {
            AttemptOutcome::Response(Response {
                status,
                class,
                ..Response::default()
            })
        };
        for status in [400, 409, 412, 413, 415, 422] {
            assert!(splits(&response(status, None)), "{status}");
        }
        for status in [
            200, 201, 202, 401, 403, 404, 405, 408, 410, 425, 429, 500, 503,
        ] {
            assert!(!splits(&response(status, None)), "{status}");
        }
        assert!(splits(&response(404, Some(BodyClass::ReferenceMissing))));
        assert!(splits(&response(
            200,
            Some(BodyClass::RpcError {
                message: "bad line".into()
            })
        )));
        assert!(!splits(&AttemptOutcome::Transport {
            kind: TransportError::ResetAfterSend,
            detail: String::new(),
        }));
    }
}
