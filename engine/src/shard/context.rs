//! What a shard's tasks hold: [`ShardContext`], through which they append to and read from any
//! partition. The owner's log is used directly when this shard owns the partition; otherwise
//! the request is forwarded over the mesh and the caller waits for the owner's response.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::BytesMut;
use futures::channel::oneshot;
use glommio::channels::local_channel::LocalSender;

use super::{
    owner_shard, Appended, Durability, MeshMessage, PartitionId, SendableData, SendableRead,
    ShardRequest, ShardResponse,
};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::log::{PartitionLog, ReadData};
use crate::waiters::Waiters;

/// A partition log opened at most once, on first use, by whichever task gets there first.
type PartitionSlot = Rc<futures::lock::Mutex<Option<Rc<PartitionLog>>>>;

/// A shard's handle to its partitions and to the other shards. Cheap to clone; lives on (and
/// only on) the shard's executor thread.
#[derive(Clone)]
pub struct ShardContext {
    state: Rc<ShardState>,
}

pub(super) struct ShardState {
    shard_id: usize,
    shard_count: usize,
    data_dir: PathBuf,
    log_config: LogConfig,
    clock: Rc<dyn Clock>,
    partitions: RefCell<HashMap<PartitionId, PartitionSlot>>,
    /// Per peer shard (`None` at our own index): the queue its mesh writer task drains.
    outbound: Vec<Option<LocalSender<MeshMessage>>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardResponse>>>,
    request_id_next: Cell<u64>,
    /// Requests this shard forwarded and awaits, plus peers' requests it is serving.
    in_flight: Cell<usize>,
    shutdown_requested: Cell<bool>,
    drained_peers: Cell<usize>,
    waiters: Waiters,
}

impl ShardContext {
    pub(super) fn new(
        shard_id: usize,
        shard_count: usize,
        data_dir: PathBuf,
        log_config: LogConfig,
        clock: Rc<dyn Clock>,
        outbound: Vec<Option<LocalSender<MeshMessage>>>,
    ) -> Self {
        assert_eq!(outbound.len(), shard_count);
        ShardContext {
            state: Rc::new(ShardState {
                shard_id,
                shard_count,
                data_dir,
                log_config,
                clock,
                partitions: RefCell::new(HashMap::new()),
                outbound,
                pending: RefCell::new(HashMap::new()),
                request_id_next: Cell::new(0),
                in_flight: Cell::new(0),
                shutdown_requested: Cell::new(false),
                drained_peers: Cell::new(0),
                waiters: Waiters::default(),
            }),
        }
    }

    pub fn shard_id(&self) -> usize {
        self.state.shard_id
    }

    pub fn shard_count(&self) -> usize {
        self.state.shard_count
    }

    pub fn owner_of(&self, partition: &PartitionId) -> usize {
        owner_shard(partition, self.state.shard_count)
    }

    /// Appends `batch` to `partition` (opening its log on first use) and waits as `durability`
    /// says, forwarding to the owning shard when that is another one.
    pub async fn append(
        &self,
        partition: PartitionId,
        batch: BytesMut,
        leader_epoch: i32,
        durability: Durability,
    ) -> Result<Appended, LogError> {
        let request = ShardRequest::Append {
            partition,
            batch,
            leader_epoch,
            durability,
        };
        match self.dispatch(request).await {
            ShardResponse::Appended(result) => result,
            ShardResponse::Read(_) => unreachable!("an append is answered with an append"),
        }
    }

    /// Reads whole batches of `partition` (see [`PartitionLog::read`]), forwarding to the
    /// owning shard when that is another one.
    pub async fn read(
        &self,
        partition: PartitionId,
        offset: u64,
        bytes_max: usize,
        offset_end: u64,
    ) -> Result<SendableRead, LogError> {
        let request = ShardRequest::Read {
            partition,
            offset,
            bytes_max,
            offset_end,
        };
        match self.dispatch(request).await {
            ShardResponse::Read(result) => result,
            ShardResponse::Appended(_) => unreachable!("a read is answered with a read"),
        }
    }

    /// Resolves once shutdown was requested (a signal or [`super::ShutdownHandle`]): tasks
    /// that accept new work stop accepting then.
    pub async fn shutdown_requested(&self) {
        self.wait_until(|state| state.shutdown_requested.get())
            .await
    }

    pub fn is_shutting_down(&self) -> bool {
        self.state.shutdown_requested.get()
    }

    async fn dispatch(&self, request: ShardRequest) -> ShardResponse {
        let partition = match &request {
            ShardRequest::Append { partition, .. } | ShardRequest::Read { partition, .. } => {
                partition
            }
        };
        let owner = self.owner_of(partition);
        if owner == self.state.shard_id {
            return self.handle_local(request).await;
        }
        // What to answer if the owner goes away before answering (only during shutdown).
        let closed = match request {
            ShardRequest::Append { .. } => || ShardResponse::Appended(Err(LogError::Closed)),
            ShardRequest::Read { .. } => || ShardResponse::Read(Err(LogError::Closed)),
        };
        let id = self.state.request_id_next.get();
        self.state.request_id_next.set(id + 1);
        let (reply, response) = oneshot::channel();
        self.state.pending.borrow_mut().insert(id, reply);
        let _in_flight = InFlight::enter(self);
        let sender = self.state.outbound[owner]
            .as_ref()
            .expect("a peer shard has an outbound queue");
        if sender
            .send(MeshMessage::Request { id, request })
            .await
            .is_err()
        {
            self.state.pending.borrow_mut().remove(&id);
            return closed();
        }
        response.await.unwrap_or_else(|_| closed())
    }

    /// Runs `request` against this shard's own log for the partition.
    pub(super) async fn handle_local(&self, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Append {
                partition,
                batch,
                leader_epoch,
                durability,
            } => ShardResponse::Appended(
                self.append_local(&partition, batch, leader_epoch, durability)
                    .await,
            ),
            ShardRequest::Read {
                partition,
                offset,
                bytes_max,
                offset_end,
            } => ShardResponse::Read(
                self.read_local(&partition, offset, bytes_max, offset_end)
                    .await,
            ),
        }
    }

    async fn append_local(
        &self,
        partition: &PartitionId,
        batch: BytesMut,
        leader_epoch: i32,
        durability: Durability,
    ) -> Result<Appended, LogError> {
        let log = self.partition_log(partition).await?;
        let receipt = log.append(batch, leader_epoch).await?;
        match durability {
            Durability::Assigned => {}
            Durability::Written => log.wait_written(&receipt).await?,
            Durability::Durable => log.wait_durable(&receipt).await?,
        }
        Ok(Appended {
            base_offset: receipt.base_offset,
            last_offset: receipt.last_offset,
        })
    }

    async fn read_local(
        &self,
        partition: &PartitionId,
        offset: u64,
        bytes_max: usize,
        offset_end: u64,
    ) -> Result<SendableRead, LogError> {
        let log = self.partition_log(partition).await?;
        let slice = log.read(offset, bytes_max, offset_end).await?;
        let data = match slice.data {
            ReadData::Empty => SendableData::Empty,
            ReadData::Memory(batches) => SendableData::Memory(batches),
            ReadData::File(range) => SendableData::File {
                file: range.duplicate_file()?.into(),
                position: range.position,
                length: range.length,
            },
        };
        Ok(SendableRead {
            data,
            offset_next: slice.offset_next,
        })
    }

    /// The partition's log, opened (and recovered) on first use.
    async fn partition_log(&self, partition: &PartitionId) -> Result<Rc<PartitionLog>, LogError> {
        assert_eq!(
            self.owner_of(partition),
            self.state.shard_id,
            "only the owning shard opens a partition"
        );
        let slot = self
            .state
            .partitions
            .borrow_mut()
            .entry(partition.clone())
            .or_default()
            .clone();
        let mut opened = slot.lock().await;
        if let Some(log) = opened.as_ref() {
            return Ok(log.clone());
        }
        let dir = self.state.data_dir.join(partition.directory_name());
        let log = Rc::new(
            PartitionLog::open(dir, self.state.log_config.clone(), self.state.clock.clone())
                .await?,
        );
        *opened = Some(log.clone());
        Ok(log)
    }

    // ----- used by the runtime -----

    pub(super) async fn send_to_peer(&self, peer: usize, message: MeshMessage) {
        let sender = self.state.outbound[peer]
            .as_ref()
            .expect("a peer shard has an outbound queue");
        // Fails only once the runtime closed the queue at the very end of shutdown.
        let _ = sender.send(message).await;
    }

    pub(super) fn complete(&self, id: u64, response: ShardResponse) {
        if let Some(reply) = self.state.pending.borrow_mut().remove(&id) {
            let _ = reply.send(response);
        }
    }

    pub(super) fn peer_drained(&self) {
        let state = &self.state;
        state.drained_peers.set(state.drained_peers.get() + 1);
        assert!(state.drained_peers.get() < state.shard_count);
        self.wake_waiters();
    }

    pub(super) fn request_shutdown(&self) {
        self.state.shutdown_requested.set(true);
        self.wake_waiters();
    }

    pub(super) async fn wait_for_no_work_in_flight(&self) {
        self.wait_until(|state| state.in_flight.get() == 0).await
    }

    pub(super) async fn wait_for_every_peer_drained(&self) {
        self.wait_until(|state| {
            state.drained_peers.get() + 1 == state.shard_count && state.in_flight.get() == 0
        })
        .await
    }

    /// Closes every partition log this shard opened (flush, `fdatasync`, indexes, clean
    /// marker). Returns the first error; closes the rest regardless.
    pub(super) async fn close_partitions(&self) -> Result<(), LogError> {
        let slots: Vec<PartitionSlot> = self
            .state
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, slot)| slot)
            .collect();
        let mut first_error = None;
        for slot in slots {
            let Some(log) = slot.lock().await.take() else {
                continue;
            };
            let result = match Rc::try_unwrap(log) {
                Ok(log) => log.close().await,
                // Still referenced by a task that outlived the drain: make it durable at least.
                Err(log) => log.sync().await,
            };
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub(super) fn enter_in_flight(&self) -> InFlight {
        InFlight::enter(self)
    }

    fn wake_waiters(&self) {
        self.state.waiters.wake_all();
    }

    async fn wait_until(&self, condition: impl Fn(&ShardState) -> bool) {
        self.state.waiters.until(|| condition(&self.state)).await
    }
}

/// Counts one unit of cross-shard work for the shutdown drain while it lives.
pub(super) struct InFlight {
    context: ShardContext,
}

impl InFlight {
    fn enter(context: &ShardContext) -> InFlight {
        let in_flight = &context.state.in_flight;
        in_flight.set(in_flight.get() + 1);
        InFlight {
            context: context.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let in_flight = &self.context.state.in_flight;
        in_flight.set(in_flight.get() - 1);
        self.context.wake_waiters();
    }
}
