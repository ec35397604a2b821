//! Connections handed from shard to shard ([`ShardContext::hand_over`]): the network layer
//! moves a connection whose partition requests nearly all go to another shard over to that
//! shard, over the mesh, to the connection handler it registered there.

use super::calls::MeshMessage;
use super::context::ShardContext;
use super::{ConnectionHandler, ConnectionHandover};

impl ShardContext {
    /// Sets what this shard does with a connection another shard hands to it.
    pub fn set_connection_handler(&self, handler: ConnectionHandler) {
        *self.state.connection_handler.borrow_mut() = Some(handler);
    }

    /// Hands `connection` to shard `to`, whose connection handler takes it (fire-and-forget:
    /// the mesh is FIFO, so it reaches `to` before this shard's `Drained`, and `to` closes it
    /// if its own shutdown was requested by then). Gives it back, untouched, when it cannot be
    /// sent: this shard's shutdown was requested, or the queue to `to` is closed (only at the
    /// very end of a shutdown).
    pub async fn hand_over(
        &self,
        to: usize,
        connection: ConnectionHandover,
    ) -> Result<(), ConnectionHandover> {
        assert!(
            to != self.state.shard_id && to < self.state.shard_count,
            "a connection is handed to another shard of this broker"
        );
        if self.is_shutting_down() {
            return Err(connection);
        }
        let sender = self.outbound_to(to);
        use glommio::{GlommioError, ResourceType::Channel};
        match sender.send(MeshMessage::Handover(connection)).await {
            Ok(()) => Ok(()),
            // A local channel refuses only when closed (or full, though `send` waited for
            // room), and gives back what was sent: this handover.
            Err(
                GlommioError::Closed(Channel(MeshMessage::Handover(connection)))
                | GlommioError::WouldBlock(Channel(MeshMessage::Handover(connection))),
            ) => Err(connection),
            Err(_) => panic!("a local channel's send gives back the message it was given"),
        }
    }

    /// Takes a connection another shard handed over: to the connection handler, unless this
    /// shard's shutdown was requested (it may have told its peers it drained, and the
    /// connection's requests could need them) or there is no handler; dropped, it is closed.
    pub(super) fn adopt_connection(&self, connection: ConnectionHandover) {
        if self.is_shutting_down() {
            return;
        }
        match &*self.state.connection_handler.borrow() {
            Some(handler) => handler(connection),
            None => crate::log_rate_limited!(
                "ferrite: shard {} closes a connection handed to it: it serves no connections",
                self.state.shard_id
            ),
        }
    }
}
