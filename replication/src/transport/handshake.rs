//! The first frames of every connection say who is calling and prove it, so the receiver can
//! attribute each message to a broker and shard and refuse, before it reads a single message,
//! a broker of another cluster (a mistyped `--peers`), of an incompatible version, or anything
//! that does not hold the cluster's secret:
//!
//! ```text
//! connector -> acceptor   Hello      version, cluster id, node id, shard, nonce
//! acceptor  -> connector  Challenge  cluster id, node id, nonce, proof
//! connector -> acceptor   Proof      proof
//! ```
//!
//! Each proof is `peer_auth`'s HMAC of the secret over both nonces, the prover's node id and
//! both cluster ids; without a secret configured the proofs are empty and not checked (a
//! broker with a secret refuses a peer without one, either way round). The acceptor writes
//! nothing after its challenge: from the proof on, a connection carries messages one way.
//!
//! The protocol version travels in the hello's payload as a fixed big-endian `u32`, outside the
//! rkyv header: a later version may change the hello's own layout, and its peers must still be
//! able to read the version and say "wrong version" rather than "invalid header".

use bytes::{BufMut, Bytes, BytesMut};
use rkyv::util::AlignedVec;

use super::frame::{self, Frame, FrameError, FrameKind, OutboundFrame, WireMessage};
use super::peer_auth::{cluster_ids_agree, ClusterSecret, Role, Transcript, NONCE_BYTES};

/// The transport protocol this build speaks; bumped by any change of the framing, of the
/// handshake or of the archived layout of the messages carried.
pub const PROTOCOL_VERSION: u32 = 3;

/// Bytes of the hello's payload: the protocol version.
const VERSION_BYTES: usize = 4;

/// Who opened a connection.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Hello {
    /// Empty while the connector does not know it yet.
    pub cluster_id: String,
    pub node_id: u64,
    pub shard: u32,
    pub nonce: [u8; NONCE_BYTES],
}

/// The acceptor's answer to a hello: who it is, and its proof.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Challenge {
    /// Empty while the acceptor does not know it yet.
    pub cluster_id: String,
    pub node_id: u64,
    pub nonce: [u8; NONCE_BYTES],
    /// Empty without a secret.
    pub proof: Vec<u8>,
}

/// The connector's proof.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Proof {
    /// Empty without a secret.
    pub proof: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("a {kind:?} frame where the handshake expects a {expected:?} frame")]
    UnexpectedFrame {
        kind: FrameKind,
        expected: FrameKind,
    },
    #[error("the hello's payload has {bytes} bytes, not a {VERSION_BYTES}-byte version")]
    VersionField { bytes: usize },
    #[error("protocol version {theirs}, we speak {PROTOCOL_VERSION}")]
    Version { theirs: u32 },
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("cluster id {theirs:?}, ours is {ours:?}")]
    Cluster { theirs: String, ours: String },
    #[error("the connection claims node {node_id}, which is not in this broker's --peers")]
    UnknownNode { node_id: u64 },
    #[error(
        "the connection claims node {node_id}, configured at {configured}, but comes from \
         {actual}"
    )]
    WrongAddress {
        node_id: u64,
        configured: std::net::IpAddr,
        actual: std::net::IpAddr,
    },
    #[error("we dialled node {dialled}, but node {answered} answered")]
    WrongPeer { dialled: u64, answered: u64 },
    #[error("authentication failed: {0}")]
    Authentication(&'static str),
}

impl HandshakeError {
    /// Whether the peer failed to prove the cluster's secret (counted apart in the metrics).
    pub fn is_authentication(&self) -> bool {
        matches!(self, HandshakeError::Authentication(_))
    }
}

/// The hello frame of a connection from `hello`.
pub fn encode(hello: &Hello, frame_bytes_max: usize) -> Result<OutboundFrame, FrameError> {
    encode_with_version(hello, PROTOCOL_VERSION, frame_bytes_max)
}

/// A hello frame claiming protocol `version` (another version's hello, for tests of the
/// refusal).
pub fn encode_with_version(
    hello: &Hello,
    version: u32,
    frame_bytes_max: usize,
) -> Result<OutboundFrame, FrameError> {
    let mut payload = BytesMut::with_capacity(VERSION_BYTES);
    payload.put_u32(version);
    frame::encode(FrameKind::Hello, hello, payload.freeze(), frame_bytes_max)
}

/// Reads the first frame of a connection: a hello of our protocol version.
pub fn read_hello(frame: &Frame, aligned: &mut AlignedVec) -> Result<Hello, HandshakeError> {
    expect_kind(frame, FrameKind::Hello)?;
    let version: [u8; VERSION_BYTES] =
        frame.payload[..]
            .try_into()
            .map_err(|_| HandshakeError::VersionField {
                bytes: frame.payload.len(),
            })?;
    let theirs = u32::from_be_bytes(version);
    if theirs != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { theirs });
    }
    Ok(frame::decode_header(&frame.header, aligned)?)
}

/// What one side of a handshake knows about itself.
#[derive(Debug, Clone, Copy)]
pub struct Own<'a> {
    pub node_id: u64,
    /// The cluster id as this broker knows it (empty: not yet).
    pub cluster_id: &'a str,
    pub secret: Option<&'a ClusterSecret>,
    pub nonce: [u8; NONCE_BYTES],
}

/// The acceptor's challenge for `hello`, or why the hello is refused (another cluster).
pub fn challenge(own: &Own<'_>, hello: &Hello) -> Result<Challenge, HandshakeError> {
    if !cluster_ids_agree(own.cluster_id, &hello.cluster_id) {
        return Err(HandshakeError::Cluster {
            theirs: hello.cluster_id.clone(),
            ours: own.cluster_id.to_string(),
        });
    }
    let transcript = Transcript {
        connector_nonce: &hello.nonce,
        acceptor_nonce: &own.nonce,
        connector_cluster_id: &hello.cluster_id,
        acceptor_cluster_id: own.cluster_id,
    };
    Ok(Challenge {
        cluster_id: own.cluster_id.to_string(),
        node_id: own.node_id,
        nonce: own.nonce,
        proof: own.secret.map_or_else(Vec::new, |secret| {
            secret
                .prove(Role::Acceptor, own.node_id, &transcript)
                .to_vec()
        }),
    })
}

/// The connector's answer to `challenge` (read from `frame`) on a connection it opened to
/// node `dialled` with `hello`: its proof, once the acceptor proved itself.
pub fn answer(
    own: &Own<'_>,
    hello: &Hello,
    dialled: u64,
    frame: &Frame,
    aligned: &mut AlignedVec,
) -> Result<Proof, HandshakeError> {
    expect_kind(frame, FrameKind::Challenge)?;
    let challenge: Challenge = frame::decode_header(&frame.header, aligned)?;
    if challenge.node_id != dialled {
        return Err(HandshakeError::WrongPeer {
            dialled,
            answered: challenge.node_id,
        });
    }
    if !cluster_ids_agree(own.cluster_id, &challenge.cluster_id) {
        return Err(HandshakeError::Cluster {
            theirs: challenge.cluster_id,
            ours: own.cluster_id.to_string(),
        });
    }
    let transcript = Transcript {
        connector_nonce: &hello.nonce,
        acceptor_nonce: &challenge.nonce,
        connector_cluster_id: &hello.cluster_id,
        acceptor_cluster_id: &challenge.cluster_id,
    };
    let Some(secret) = own.secret else {
        return Ok(Proof { proof: Vec::new() });
    };
    if challenge.proof.is_empty() {
        return Err(HandshakeError::Authentication(
            "the peer has no cluster secret configured",
        ));
    }
    if !secret.verify(Role::Acceptor, dialled, &transcript, &challenge.proof) {
        return Err(HandshakeError::Authentication(
            "the peer's proof does not match our cluster secret",
        ));
    }
    Ok(Proof {
        proof: secret
            .prove(Role::Connector, hello.node_id, &transcript)
            .to_vec(),
    })
}

/// Checks the connector's proof (read from `frame`) for the `challenge` the acceptor sent.
pub fn check_proof(
    own: &Own<'_>,
    hello: &Hello,
    challenge: &Challenge,
    frame: &Frame,
    aligned: &mut AlignedVec,
) -> Result<(), HandshakeError> {
    expect_kind(frame, FrameKind::Proof)?;
    let proof: Proof = frame::decode_header(&frame.header, aligned)?;
    let Some(secret) = own.secret else {
        return Ok(());
    };
    if proof.proof.is_empty() {
        return Err(HandshakeError::Authentication(
            "the peer has no cluster secret configured",
        ));
    }
    let transcript = Transcript {
        connector_nonce: &hello.nonce,
        acceptor_nonce: &challenge.nonce,
        connector_cluster_id: &hello.cluster_id,
        acceptor_cluster_id: &challenge.cluster_id,
    };
    if !secret.verify(Role::Connector, hello.node_id, &transcript, &proof.proof) {
        return Err(HandshakeError::Authentication(
            "the peer's proof does not match our cluster secret",
        ));
    }
    Ok(())
}

/// A handshake frame of `kind` carrying `header` (challenges and proofs have no payload).
pub fn encode_frame<M: WireMessage>(
    kind: FrameKind,
    header: &M,
    frame_bytes_max: usize,
) -> Result<OutboundFrame, FrameError> {
    frame::encode(kind, header, Bytes::new(), frame_bytes_max)
}

fn expect_kind(frame: &Frame, expected: FrameKind) -> Result<(), HandshakeError> {
    if frame.kind != expected {
        return Err(HandshakeError::UnexpectedFrame {
            kind: frame.kind,
            expected,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(frame: OutboundFrame) -> Frame {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame.head);
        wire.extend_from_slice(&frame.payload);
        frame::take_frame(&mut wire, 1 << 20).unwrap().unwrap()
    }

    fn hello(cluster_id: &str) -> Hello {
        Hello {
            cluster_id: cluster_id.to_string(),
            node_id: 3,
            shard: 1,
            nonce: [7; NONCE_BYTES],
        }
    }

    fn own<'a>(node_id: u64, cluster_id: &'a str, secret: Option<&'a ClusterSecret>) -> Own<'a> {
        Own {
            node_id,
            cluster_id,
            secret,
            nonce: [node_id as u8; NONCE_BYTES],
        }
    }

    /// Runs the three frames between connector node 3 and acceptor node 1.
    fn handshake(
        connector: &Own<'_>,
        acceptor: &Own<'_>,
        dialled: u64,
    ) -> Result<(), HandshakeError> {
        let aligned = &mut AlignedVec::new();
        let sent = Hello {
            cluster_id: connector.cluster_id.to_string(),
            nonce: connector.nonce,
            ..hello("")
        };
        let hello = read_hello(&received(encode(&sent, 1 << 20).unwrap()), aligned)?;
        assert_eq!(hello, sent);
        let challenge = challenge(acceptor, &hello)?;
        let frame = received(encode_frame(FrameKind::Challenge, &challenge, 1 << 20).unwrap());
        let proof = answer(connector, &sent, dialled, &frame, aligned)?;
        let frame = received(encode_frame(FrameKind::Proof, &proof, 1 << 20).unwrap());
        check_proof(acceptor, &hello, &challenge, &frame, aligned)
    }

    #[test]
    fn brokers_of_one_cluster_and_secret_complete_the_handshake() {
        let secret = ClusterSecret::new(&[5; 32]);
        handshake(&own(3, "a", Some(&secret)), &own(1, "a", Some(&secret)), 1).unwrap();
        handshake(&own(3, "", Some(&secret)), &own(1, "a", Some(&secret)), 1).unwrap();
        handshake(&own(3, "a", None), &own(1, "a", None), 1).unwrap();
    }

    #[test]
    fn a_wrong_or_missing_secret_is_refused_either_way_round() {
        let secret = ClusterSecret::new(&[5; 32]);
        let wrong = ClusterSecret::new(&[6; 32]);
        for (connector, acceptor) in [
            (Some(&wrong), Some(&secret)),
            (Some(&secret), Some(&wrong)),
            (None, Some(&secret)),
            (Some(&secret), None),
        ] {
            let refused = handshake(&own(3, "a", connector), &own(1, "a", acceptor), 1);
            assert!(
                matches!(&refused, Err(error) if error.is_authentication()),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn another_cluster_version_or_peer_is_refused() {
        assert!(matches!(
            handshake(&own(3, "b", None), &own(1, "a", None), 1),
            Err(HandshakeError::Cluster { .. })
        ));
        assert!(matches!(
            handshake(&own(3, "a", None), &own(1, "a", None), 2),
            Err(HandshakeError::WrongPeer {
                dialled: 2,
                answered: 1
            })
        ));
        let frame =
            received(encode_with_version(&hello("a"), PROTOCOL_VERSION + 1, 1 << 20).unwrap());
        assert!(matches!(
            read_hello(&frame, &mut AlignedVec::new()),
            Err(HandshakeError::Version { theirs }) if theirs == PROTOCOL_VERSION + 1
        ));
    }
}
