//! The traffic of the mesh, typed: what one shard sends another, and what the receiver does with
//! each message on arrival.
//!
//! Three kinds of traffic, each with its own shape:
//! - Calls ([`ShardCall`]): work on a partition another shard owns (an append, a read, an
//!   offset query). Each kind of request is a type whose `Answer` type says what comes back, so
//!   the answer cannot be of another kind: the call travels as an [`Envelope`] holding the
//!   request and the caller's typed answer slot, and the owner sends the answer back over the
//!   mesh as a [`Reply`], which completes the caller's wait when its shard reads it. No answer
//!   crosses threads beside the mesh, so the caller is woken by its own reader, not by another
//!   thread.
//! - Posts ([`ShardContext::post`]): work an upper layer (replication's Raft messages) sends to
//!   the shard that can do it, run there on arrival, in arrival order; fire-and-forget. A post
//!   is a closure over the upper layer's own typed message: the engine carries it without
//!   knowing what it says, and nothing needs to be downcast at the other end.
//!   [`ShardContext::call_on`] is a post whose answer comes back as a [`Reply`] (replication's
//!   controller calls, `net`'s group requests).
//! - A connection handover (`handover.rs`): a closure of the network layer's, like a post, but
//!   closed rather than run if the receiver's shutdown was requested.
//! - The shard's own bookkeeping: a long poll's cancellation and the shutdown drain's
//!   `Drained`.
//!
//! Every message to a peer goes through the bounded queue of that peer's mesh writer task
//! (`runtime.rs`), which stages what is queued and publishes it at once: a turn's messages to
//! one shard (a frame's Raft messages included) cost one release store and at most one
//! doorbell.

use std::future::Future;

use futures::channel::oneshot;
use futures::future::{abortable, AbortHandle, LocalBoxFuture};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::context::{InFlight, ShardContext};
use super::handover::ConnectionHandover;
use super::PartitionId;
use crate::mesh::Receiver;

/// What travels on the mesh between two shards.
pub(super) enum MeshMessage {
    /// A request for the receiver, answered with a [`MeshMessage::Reply`] unless the sender
    /// cancels it first. `id` names it for [`MeshMessage::Cancel`].
    Call { id: u64, call: Box<dyn ServeCall> },
    /// The answer to one of the receiver's calls.
    Reply(Reply),
    /// Work an upper layer sent to the receiver, run on arrival; nothing is answered.
    Post(ShardTask),
    /// The sender no longer waits for the answer to its call `id` (a long poll that ended for
    /// another reason): the receiver stops serving it and sends no answer.
    Cancel { id: u64 },
    /// A client connection for the receiver to adopt; fire-and-forget. Sent only
    /// before the sender's `Drained` (the mesh is FIFO), so the receiver sees it while it still
    /// serves its peers; one that arrives once the receiver's shutdown was requested is closed
    /// there (its requests could need peers that drained).
    Handover(ConnectionHandover),
    /// The sender has finished its shutdown drain: it will send no more calls.
    Drained,
}

/// A request the shard owning its partitions serves for another shard. Its answer's type is
/// part of the request's type.
pub(super) trait ShardCall: Send + Sized + 'static {
    type Answer: Send + 'static;

    /// Whether the caller cancels it on the owner when it stops waiting (a long poll, which
    /// would otherwise hold a task and the partitions' wake-ups until its timeout).
    const CANCELLABLE: bool = false;

    /// What the caller gets when the owner went away without answering (only at shutdown).
    fn closed(&self) -> Self::Answer;

    /// Serves the request on the shard that owns its partitions. What must happen in arrival
    /// order (an append's place in its partition) has happened when this resolves; the
    /// returned future is the rest (the wait for durability, the read).
    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer>;
}

/// A [`ShardCall`] on its way to its owner, with the caller's slot for the answer.
pub(super) struct Envelope<Call: ShardCall> {
    call: Call,
    answer_to: oneshot::Sender<Call::Answer>,
}

/// An [`Envelope`] of any kind of call, as the mesh carries it.
pub(super) trait ServeCall: Send {
    fn cancellable(&self) -> bool;

    /// [`ShardCall::accept`], then the [`Reply`] to send back once the answer is ready.
    fn serve(
        self: Box<Self>,
        context: ShardContext,
    ) -> LocalBoxFuture<'static, LocalBoxFuture<'static, Reply>>;
}

impl<Call: ShardCall> ServeCall for Envelope<Call> {
    fn cancellable(&self) -> bool {
        Call::CANCELLABLE
    }

    // Yielding a future is the point: the outer one is what runs in arrival order, the inner
    // one the rest.
    #[allow(clippy::async_yields_async)]
    fn serve(
        self: Box<Self>,
        context: ShardContext,
    ) -> LocalBoxFuture<'static, LocalBoxFuture<'static, Reply>> {
        let Envelope { call, answer_to } = *self;
        Box::pin(async move {
            let answering = call.accept(&context).await;
            Box::pin(async move { Reply::new(answer_to, answering.await) })
                as LocalBoxFuture<'static, Reply>
        })
    }
}

/// An answer on its way back to the shard that asked: completes the caller's wait when run
/// there.
pub(super) struct Reply(Box<dyn FnOnce() + Send>);

impl Reply {
    fn new<Answer: Send + 'static>(answer_to: oneshot::Sender<Answer>, answer: Answer) -> Reply {
        // The caller may have stopped waiting: its answer is dropped.
        Reply(Box::new(move || drop(answer_to.send(answer))))
    }

    fn complete(self) {
        (self.0)()
    }
}

/// Work an upper layer sends to another shard ([`ShardContext::post`]).
pub(super) struct ShardTask(Box<dyn FnOnce(&ShardContext) + Send>);

impl ShardContext {
    /// Runs `call` on the shard owning `partition`: here, or forwarded over the mesh.
    pub(super) async fn dispatch<Call: ShardCall>(
        &self,
        partition: &PartitionId,
        call: Call,
    ) -> Call::Answer {
        let owner = self.owner_of(partition);
        if owner == self.shard_id() {
            return call.accept(self).await.await;
        }
        self.forward(owner, call).await.await
    }

    /// Queues `call` to shard `owner`; the returned future resolves with its answer. By the
    /// time this returns the call has its place in the FIFO queue to `owner`. Dropping the
    /// future before the answer came cancels a [`ShardCall::CANCELLABLE`] call on the owner;
    /// any other runs to its end there, and its answer is dropped.
    pub(super) async fn forward<Call: ShardCall>(
        &self,
        owner: usize,
        call: Call,
    ) -> impl Future<Output = Call::Answer> + 'static {
        let closed = call.closed();
        let id = self.state.call_id_next.get();
        self.state.call_id_next.set(id + 1);
        let (answer_to, answer) = oneshot::channel();
        let in_flight = self.enter_in_flight();
        let sent_to_owner = &self.state.mesh_requests_sent[owner];
        sent_to_owner.set(sent_to_owner.get() + 1);
        let call = Box::new(Envelope { call, answer_to });
        let sent = self
            .outbound_to(owner)
            .send(MeshMessage::Call { id, call })
            .await
            .is_ok();
        let mut cancel = (sent && Call::CANCELLABLE).then(|| CancelOnDrop {
            context: Some(self.clone()),
            owner,
            id,
        });
        async move {
            let _in_flight = in_flight;
            // Not sent, or dropped unanswered: the owner is gone (only at shutdown).
            let answer = answer.await.unwrap_or(closed);
            if let Some(cancel) = &mut cancel {
                cancel.disarm();
            }
            answer
        }
    }

    /// Runs `task` on shard `to` when it reads it; returns at once (fire-and-forget: nothing is
    /// answered, and a task that cannot be delivered, at the very end of a shutdown, is
    /// dropped). Posts arrive in the order they were made while `to`'s queue has room; one that
    /// finds it full waits in a task of its own, which a later post may pass (Raft's messages
    /// allow that; what must keep its order goes with [`ShardContext::call_on`], which waits). What an upper layer uses for
    /// messages it routes to the shard that owns their partition: the closure holds the
    /// message, typed, and finds the receiver's state itself. Counted among the mesh requests
    /// sent to `to` ([`ShardContext::mesh_requests_sent`]), not as work in flight.
    ///
    /// # Panics
    ///
    /// If `to` is this shard (run the work directly) or not one of the runtime's.
    pub fn post(&self, to: usize, task: impl FnOnce(&ShardContext) + Send + 'static) {
        self.send_soon(to, self.post_message(to, task));
    }

    /// `task` as a post to shard `to`, counted among the mesh requests sent to it.
    fn post_message(
        &self,
        to: usize,
        task: impl FnOnce(&ShardContext) + Send + 'static,
    ) -> MeshMessage {
        assert!(
            to != self.shard_id() && to < self.shard_count(),
            "work is posted to another shard of this broker"
        );
        let sent_to = &self.state.mesh_requests_sent[to];
        sent_to.set(sent_to.get() + 1);
        MeshMessage::Post(ShardTask(Box::new(task)))
    }

    /// Runs `work` on shard `on` (here if it is this one) and resolves with what the future it
    /// makes there resolves to, which travels back over the mesh; `None` if that shard stopped
    /// first. The future runs to its end in a task of its own, whether or not the caller still
    /// waits. Not counted as work in flight on either shard: an upper layer's call may wait on
    /// other brokers (a controller's commit), which the shutdown drain must not wait for.
    pub async fn call_on<Answer, Work>(&self, on: usize, work: Work) -> Option<Answer>
    where
        Answer: Send + 'static,
        Work: FnOnce(&ShardContext) -> LocalBoxFuture<'static, Answer> + Send + 'static,
    {
        let (answer_to, answer) = oneshot::channel();
        if on == self.shard_id() {
            let answering = work(self);
            glommio::spawn_local(async move { drop(answer_to.send(answering.await)) }).detach();
            return answer.await.ok();
        }
        let caller = self.shard_id();
        let post = self.post_message(on, move |context| {
            let answering = work(context);
            let context = context.clone();
            glommio::spawn_local(async move {
                let reply = Reply::new(answer_to, answering.await);
                context
                    .send_to_peer(caller, MeshMessage::Reply(reply))
                    .await;
            })
            .detach();
        });
        // Waits for room rather than sending from a task of its own, as a forwarded call
        // does: calls made one after the other arrive in that order (a group's requests).
        self.send_to_peer(on, post).await;
        answer.await.ok()
    }

    /// Queues `message` to `peer` without waiting: at once if its queue has room, else from a
    /// task of its own once it has (a closed queue, at the very end of a shutdown, drops it).
    fn send_soon(&self, peer: usize, message: MeshMessage) {
        if let Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(message))) =
            self.outbound_to(peer).try_send(message)
        {
            let context = self.clone();
            glommio::spawn_local(async move { context.send_to_peer(peer, message).await }).detach();
        }
    }

    /// Queues `message` to `peer`, waiting for room in its queue.
    pub(super) async fn send_to_peer(&self, peer: usize, message: MeshMessage) {
        // Fails only once the runtime closed the queue at the very end of shutdown.
        let _ = self.outbound_to(peer).send(message).await;
    }

    /// Reads what `receiver`'s peer sends this shard, for as long as the shard runs: serves
    /// its calls (each in a task of its own once what must happen in arrival order happened,
    /// counted as work in flight until answered), completes this shard's calls with their
    /// replies, runs its posts, and takes its handovers and its `Drained`.
    pub(super) async fn serve_peer(&self, mut receiver: Receiver<MeshMessage>) {
        let peer = receiver.peer_shard_id();
        // The peer's cancellable calls being served, by id.
        let cancellable: Rc<RefCell<HashMap<u64, AbortHandle>>> = Rc::default();
        loop {
            match receiver.recv().await {
                MeshMessage::Call { id, call } => {
                    let in_flight = self.enter_in_flight();
                    let is_cancellable = call.cancellable();
                    let answering = call.serve(self.clone()).await;
                    let answering: LocalBoxFuture<'static, Option<Reply>> = if is_cancellable {
                        let (answering, abort) = abortable(answering);
                        cancellable.borrow_mut().insert(id, abort);
                        let cancellable = cancellable.clone();
                        Box::pin(async move {
                            let reply = answering.await.ok();
                            cancellable.borrow_mut().remove(&id);
                            reply
                        })
                    } else {
                        Box::pin(async move { Some(answering.await) })
                    };
                    let context = self.clone();
                    glommio::spawn_local(async move {
                        answer_peer(context, peer, answering, in_flight).await
                    })
                    .detach();
                }
                MeshMessage::Reply(reply) => reply.complete(),
                MeshMessage::Post(ShardTask(task)) => task(self),
                MeshMessage::Cancel { id } => {
                    if let Some(abort) = cancellable.borrow_mut().remove(&id) {
                        abort.abort();
                    }
                }
                MeshMessage::Handover(connection) => self.adopt_connection(connection),
                MeshMessage::Drained => self.peer_drained(),
            }
        }
    }
}

/// Sends `peer` the reply `answering` resolves to (none if cancelled), then stops counting the
/// call as in flight.
async fn answer_peer(
    context: ShardContext,
    peer: usize,
    answering: LocalBoxFuture<'static, Option<Reply>>,
    in_flight: InFlight,
) {
    if let Some(reply) = answering.await {
        context.send_to_peer(peer, MeshMessage::Reply(reply)).await;
    }
    drop(in_flight);
}

/// Tells the owner of a cancellable call that nobody waits for it any more when dropped before
/// its answer came: the owner stops serving it (a long poll stops holding the partitions'
/// wake-ups and a task).
struct CancelOnDrop {
    /// `None` once answered: nothing left to cancel.
    context: Option<ShardContext>,
    owner: usize,
    id: u64,
}

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.context = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(context) = self.context.take() {
            context.send_soon(self.owner, MeshMessage::Cancel { id: self.id });
        }
    }
}
