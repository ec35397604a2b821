//! The metrics endpoint: `GET /metrics` answers the Prometheus text exposition of every shard's
//! counters. It runs on a thread of its own (tiny_http), outside the shards, so scraping never
//! takes time from a reactor.

use std::net::SocketAddr;

use net::metrics::MetricsRegistry;

/// Starts serving `registry` on `listener` (bound by the caller, so that start-up can wait for
/// an address still in use); returns the bound address.
pub fn serve(
    listener: std::net::TcpListener,
    registry: MetricsRegistry,
) -> std::io::Result<SocketAddr> {
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("the metrics server is not on an IP address"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    let content_type = tiny_http::Header::from_bytes(
                        "Content-Type",
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                    .expect("a valid static header");
                    tiny_http::Response::from_string(registry.render()).with_header(content_type)
                } else {
                    tiny_http::Response::from_string("not found; try /metrics\n")
                        .with_status_code(404)
                };
                // A client that went away is not our problem.
                let _ = request.respond(response);
            }
        })?;
    Ok(bound)
}
