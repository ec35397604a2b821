//! The Kafka listener of one shard. Every shard binds the same address (glommio sets
//! SO_REUSEPORT), so the kernel spreads connections over the shards; each connection is served
//! on the shard that accepted it. The accept loop ends when shutdown is requested, which is how
//! the broker stops accepting before it drains.

use std::net::SocketAddr;

use std::rc::Rc;

use futures::future::{select, Either};
use glommio::net::TcpListener;

use crate::broker::Broker;
use crate::connection::{serve_connection, ConnectionConfig};

/// Binds this shard's listener (SO_REUSEPORT: every shard binds the same address).
pub fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).map_err(std::io::Error::from)
}

/// Accepts connections on `listener` until shutdown is requested, serving each on this shard.
pub async fn accept_until_shutdown(
    broker: Rc<Broker>,
    listener: TcpListener,
    config: ConnectionConfig,
) {
    loop {
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            let shutdown = std::pin::pin!(broker.context.shutdown_requested());
            match select(accept, shutdown).await {
                Either::Left((accepted, _)) => accepted,
                Either::Right(((), _)) => return,
            }
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                // Out of descriptors and the like: say so, keep accepting.
                eprintln!("ferrite: accepting a connection failed: {error}");
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        glommio::spawn_local(serve_connection(stream, peer, broker.clone(), config)).detach();
    }
}
