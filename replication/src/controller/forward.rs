//! Requests between brokers: any broker's [`Controller::request`] finds the leader (its own
//! replica's view, a `NotLeader` hint, or else the voters in turn), asks it over the wire with
//! a fresh request id per attempt, and retries on a timeout or `NotLeader` until the request
//! timeout. A late answer to an abandoned attempt finds no pending id and is dropped.

use bytes::Bytes;
use futures::channel::oneshot;

use super::wire::{ControllerRequest, ControllerWire, Outcome};
use super::{within, Controller, ControllerError};
use crate::message::{Index, NodeId};

impl Controller {
    /// Has the controller leader decide `request`; answers with the metadata log index that
    /// holds the change once it is committed (wait for it with
    /// [`wait_applied`](Self::wait_applied) before reading the image). CreateTopic's counts are
    /// the resolved ones (no -1 defaults).
    pub async fn request(&self, request: ControllerRequest) -> Result<Index, ControllerError> {
        let config = &self.inner.config;
        let started = std::time::Instant::now();
        let mut hint: Option<NodeId> = None;
        for attempt in 0.. {
            if let Some(reason) = self.stopped() {
                return Err(ControllerError::Stopped(reason));
            }
            let voters = config.voters();
            let target = hint
                .or_else(|| self.leader())
                .unwrap_or(voters[attempt % voters.len()]);
            let outcome = if target == self.node_id() {
                within(config.attempt_timeout, self.lead(request.clone())).await
            } else {
                self.ask(target, request.clone()).await
            };
            match outcome {
                Some(Outcome::Applied(index)) => return Ok(index),
                Some(Outcome::Refused(error)) => {
                    return Err(ControllerError::Refused(error.into()))
                }
                Some(Outcome::Failed(reason)) => return Err(ControllerError::Failed(reason)),
                Some(Outcome::NotLeader { leader_hint }) => {
                    hint = leader_hint.filter(|leader| *leader != target);
                }
                None => hint = None,
            }
            if started.elapsed() + config.tick_interval >= config.request_timeout {
                break;
            }
            // An election may be under way: give it a tick before asking again.
            glommio::timer::sleep(config.tick_interval).await;
        }
        Err(ControllerError::Timeout(config.request_timeout))
    }

    /// One attempt at broker `target`: its answer, or `None` after the attempt timeout.
    async fn ask(&self, target: NodeId, request: ControllerRequest) -> Option<Outcome> {
        let request_id = self.inner.request_id_next.get();
        self.inner.request_id_next.set(request_id.wrapping_add(1));
        let (answer, answered) = oneshot::channel();
        self.inner.pending.borrow_mut().insert(request_id, answer);
        self.inner.outbox.send(
            target,
            ControllerWire::Request {
                request_id,
                request,
            },
            Bytes::new(),
        );
        let outcome = within(self.inner.config.attempt_timeout, answered).await;
        self.inner.pending.borrow_mut().remove(&request_id);
        outcome.and_then(Result::ok)
    }

    /// A request from broker `from`: decided here if this broker leads, answered `NotLeader`
    /// otherwise. Beyond `served_requests_max` at once it is dropped (the sender retries).
    pub(super) fn serve(&self, from: NodeId, request_id: u64, request: ControllerRequest) {
        let in_flight = &self.inner.served_in_flight;
        if in_flight.get() >= self.inner.config.served_requests_max {
            return;
        }
        in_flight.set(in_flight.get() + 1);
        let controller = self.clone();
        glommio::spawn_local(async move {
            let decided = within(
                controller.inner.config.attempt_timeout,
                controller.lead(request),
            )
            .await;
            let in_flight = &controller.inner.served_in_flight;
            in_flight.set(in_flight.get() - 1);
            // Undecided in time: the sender has given up on this attempt already.
            if let Some(outcome) = decided {
                let response = ControllerWire::Response {
                    request_id,
                    outcome,
                };
                controller.inner.outbox.send(from, response, Bytes::new());
            }
        })
        .detach();
    }

    /// A leader's answer to one of this broker's requests.
    pub(super) fn complete(&self, request_id: u64, outcome: Outcome) {
        if let Some(answer) = self.inner.pending.borrow_mut().remove(&request_id) {
            // The requester may have given up meanwhile.
            let _ = answer.send(outcome);
        }
    }
}
