//! The requests each shard forwarded over the mesh to each other shard, from their snapshots.

use std::fmt::Write;

use super::exposition::write_family;
use super::shard::ShardSnapshot;

/// The requests each shard forwarded to each other shard.
pub(super) fn render_mesh(out: &mut String, snapshots: &[ShardSnapshot]) {
    let name = "ferrite_mesh_requests_total";
    write_family(
        out,
        name,
        "counter",
        "Requests a shard forwarded over the mesh to the shard owning their partitions (`to`): \
         a connection's requests for partitions another shard owns, and the broker's own.",
    );
    for (shard, snapshot) in snapshots.iter().enumerate() {
        for (to, sent) in snapshot.mesh_requests_sent.iter().enumerate() {
            if to != shard {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\",to=\"{to}\"}} {sent}");
            }
        }
    }
}
