//! Who may speak on the inter-broker port: the cluster's shared secret and the cluster's id,
//! and the proofs of the handshake (`handshake`) computed from them.
//!
//! The secret never crosses the wire. Each side of a connection sends a fresh random nonce and
//! proves it holds the secret with HMAC-SHA-256(secret, role || both nonces || its claimed node
//! id || both cluster ids as sent), compared in constant time. The role label keeps a proof
//! from being reflected back as the other side's; the nonces make each proof good for one
//! connection only; the node id binds the proof to the identity the connection claims, so a
//! recorded proof cannot be replayed under another id. A shared secret cannot stop a holder of
//! it from claiming another broker's id: that is what the peer-list address check (`inbound`)
//! and, beyond it, per-broker certificates are for.
//!
//! The cluster id is shared by every shard of the broker and may be adopted while it runs: a
//! broker whose data directory has none yet (a fresh one, or one written before cluster ids)
//! learns it from the metadata log, so its handle starts empty and is filled in once.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes of a proof (an HMAC-SHA-256).
pub const PROOF_BYTES: usize = 32;

/// Fewest bytes a secret file must hold (after trimming whitespace): a secret shorter than a
/// hash is guessable offline from one recorded handshake.
pub const SECRET_BYTES_MIN: usize = 32;

/// The side of a connection a proof is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The broker that opened the connection (and says hello).
    Connector,
    /// The broker that accepted it (and answers with a challenge).
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Connector => b"ferrite inter-broker v3 connector",
            Role::Acceptor => b"ferrite inter-broker v3 acceptor",
        }
    }
}

/// What both sides said in the handshake, which each proof covers.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    pub connector_nonce: &'a [u8],
    pub acceptor_nonce: &'a [u8],
    /// The cluster id each side sent (empty: none yet).
    pub connector_cluster_id: &'a str,
    pub acceptor_cluster_id: &'a str,
}

/// The cluster's shared secret, read from a file; never printed.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ClusterSecret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "the cluster secret file {path} holds {bytes} bytes; at least {SECRET_BYTES_MIN} are \
         needed (e.g. `openssl rand -base64 48 > FILE`)"
    )]
    TooShort { path: String, bytes: usize },
}

/// Secrets compare in constant time, as proofs do.
impl PartialEq for ClusterSecret {
    fn eq(&self, other: &ClusterSecret) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for ClusterSecret {}

impl ClusterSecret {
    /// The secret in `bytes` (tests; brokers read it with [`ClusterSecret::read_file`]).
    pub fn new(bytes: &[u8]) -> ClusterSecret {
        ClusterSecret(bytes.into())
    }

    /// The secret in the file at `path`, without the whitespace around it (a trailing newline
    /// of an editor or `echo` is not part of it).
    pub fn read_file(path: &Path) -> Result<ClusterSecret, SecretError> {
        let contents = std::fs::read(path).map_err(|error| SecretError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let secret = contents.trim_ascii();
        if secret.len() < SECRET_BYTES_MIN {
            return Err(SecretError::TooShort {
                path: path.display().to_string(),
                bytes: secret.len(),
            });
        }
        Ok(ClusterSecret::new(secret))
    }

    /// The proof that the side in `role`, claiming `node_id`, holds the secret.
    pub fn prove(&self, role: Role, node_id: u64, transcript: &Transcript<'_>) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(role.label());
        for field in [
            transcript.connector_nonce,
            transcript.acceptor_nonce,
            &node_id.to_be_bytes(),
            transcript.connector_cluster_id.as_bytes(),
            transcript.acceptor_cluster_id.as_bytes(),
        ] {
            // Each field with its length, so no two transcripts run together alike.
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `proof` is the side's proof, compared in constant time.
    pub fn verify(
        &self,
        role: Role,
        node_id: u64,
        transcript: &Transcript<'_>,
        proof: &[u8],
    ) -> bool {
        bool::from(self.prove(role, node_id, transcript).ct_eq(proof))
    }
}

/// A fresh random nonce.
pub fn new_nonce() -> Result<[u8; NONCE_BYTES], getrandom::Error> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce)?;
    Ok(nonce)
}

/// The cluster's id as this broker knows it, shared by its shards (empty while not known).
#[derive(Debug, Clone)]
pub struct ClusterIdentity(Arc<ArcSwap<String>>);

impl ClusterIdentity {
    /// An identity known as `id` (empty: not known yet).
    pub fn new(id: impl Into<String>) -> ClusterIdentity {
        ClusterIdentity(Arc::new(ArcSwap::from_pointee(id.into())))
    }

    /// The id, empty while not known.
    pub fn get(&self) -> Arc<String> {
        self.0.load_full()
    }

    /// Takes `id` if none is known yet; returns whether it did.
    pub fn adopt(&self, id: &str) -> bool {
        let mut adopted = false;
        self.0.rcu(|current| {
            adopted = current.is_empty();
            if adopted {
                Arc::new(id.to_string())
            } else {
                current.clone()
            }
        });
        adopted
    }
}

impl<T: Into<String>> From<T> for ClusterIdentity {
    fn from(id: T) -> ClusterIdentity {
        ClusterIdentity::new(id)
    }
}

/// Whether ids `ours` and `theirs` (either empty while not known) may belong to one cluster.
pub fn cluster_ids_agree(ours: &str, theirs: &str) -> bool {
    ours.is_empty() || theirs.is_empty() || ours == theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript<'static> {
        Transcript {
            connector_nonce: &[1; NONCE_BYTES],
            acceptor_nonce: &[2; NONCE_BYTES],
            connector_cluster_id: "a",
            acceptor_cluster_id: "a",
        }
    }

    #[test]
    fn a_proof_holds_only_for_its_secret_role_node_and_nonces() {
        let secret = ClusterSecret::new(b"0123456789abcdef0123456789abcdef");
        let proof = secret.prove(Role::Connector, 2, &transcript());
        assert!(secret.verify(Role::Connector, 2, &transcript(), &proof));
        assert!(!secret.verify(Role::Acceptor, 2, &transcript(), &proof));
        assert!(!secret.verify(Role::Connector, 1, &transcript(), &proof));
        let other_nonce = Transcript {
            acceptor_nonce: &[3; NONCE_BYTES],
            ..transcript()
        };
        assert!(!secret.verify(Role::Connector, 2, &other_nonce, &proof));
        let other = ClusterSecret::new(b"0123456789abcdef0123456789abcdeX");
        assert!(!other.verify(Role::Connector, 2, &transcript(), &proof));
        assert!(!secret.verify(Role::Connector, 2, &transcript(), &[]));
    }

    #[test]
    fn an_unknown_id_is_adopted_once() {
        let identity = ClusterIdentity::new("");
        assert!(identity.adopt("first"));
        assert!(!identity.adopt("second"));
        assert_eq!(*identity.get(), "first");
        assert!(cluster_ids_agree("", "x") && cluster_ids_agree("x", "x"));
        assert!(!cluster_ids_agree("x", "y"));
    }
}
