//! Connections handed from shard to shard ([`ShardContext::hand_over`]): the network layer
//! moves a connection whose partition requests nearly all go to another shard over to that
//! shard, over the mesh. The connection travels as a `ConnectionHandover`, a closure the
//! network layer makes over its own typed connection state, which adopts it on the receiving
//! shard: the engine carries it without knowing what it holds, and nothing is downcast there.

use super::calls::MeshMessage;
use super::context::ShardContext;

/// A client connection on its way to another shard: what adopts it there. Dropping it closes
/// the connection.
pub(super) struct ConnectionHandover(Box<dyn FnOnce(&ShardContext) + Send>);

impl ShardContext {
    /// Hands `connection` to shard `to`, where `adopt` takes it when that shard reads it
    /// (fire-and-forget: the mesh is FIFO, so it reaches `to` before this shard's `Drained`,
    /// and `to` closes it if its own shutdown was requested by then). Gives it back, untouched,
    /// when this shard's shutdown was requested.
    pub async fn hand_over<Connection, Adopt>(
        &self,
        to: usize,
        connection: Connection,
        adopt: Adopt,
    ) -> Result<(), Connection>
    where
        Connection: Send + 'static,
        Adopt: FnOnce(&ShardContext, Connection) + Send + 'static,
    {
        assert!(
            to != self.state.shard_id && to < self.state.shard_count,
            "a connection is handed to another shard of this broker"
        );
        if self.is_shutting_down() {
            return Err(connection);
        }
        let handover = ConnectionHandover(Box::new(move |context| adopt(context, connection)));
        // The queue to `to` closes only when this shard's executor ends, long after its
        // shutdown was requested (checked above), and this task with it.
        self.send_to_peer(to, MeshMessage::Handover(handover)).await;
        Ok(())
    }

    /// Takes a connection another shard handed over, unless this shard's shutdown was requested
    /// (it may have told its peers it drained, and the connection's requests could need them):
    /// dropped, it is closed.
    pub(super) fn adopt_connection(&self, connection: ConnectionHandover) {
        if !self.is_shutting_down() {
            (connection.0)(self);
        }
    }
}
