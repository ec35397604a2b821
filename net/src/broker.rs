//! What a shard's connections share: the shard's context (partitions, here or over the mesh),
//! its view of the catalog, and the broker's configuration; and the dispatch of one decoded
//! request to its API's handler.
//!
//! Handling is split in two so that a connection can pipeline: [`Broker::start`] runs the
//! part that must happen in request order (a produce request's appends get their place in
//! each partition's order) and returns the rest as a future, which the connection awaits
//! concurrently with later requests while it writes responses strictly in request order.

use ferrite_replication::transport::peer_auth::ClusterIdentity;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use engine::acls::Acls;
use engine::catalog::{Catalog, CatalogError, Topic, OFFSETS_TOPIC};
use engine::credentials::{CredentialChange, Credentials};
use engine::resources::ReadDescriptor;
use engine::shard::ShardContext;
use engine::LogConfig;
use ferrite_replication::cluster::ShardCluster;
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::Encodable;

use crate::api_versions;
use crate::authorizer::AuthorizerConfig;
use crate::cluster::Cluster;
use crate::groups::shard::ShardGroups;
use crate::handlers;
use crate::handover::{Draining, Routing};
use crate::listener::{ConnectionSecurity, Endpoint, ListenerName};
use crate::metrics::ShardMetrics;
use crate::old_versions::{Body, RefusedRequest, VersionedResponse};
use crate::quotas::{self, ConnectionThrottle, QuotaUsage};
use crate::request::{DecodedRequest, RequestError};
use crate::response::{put_response, put_response_with};
use crate::sasl::{self, SaslConfig};
use crate::transactions::ShardTransactions;
use engine::quotas::QuotaKey;

/// The broker's settings that the protocol exposes.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// The addresses clients are told to connect to (Metadata, FindCoordinator), one per
    /// listener: a client is told the one of the listener it came in on.
    pub advertised: Vec<Endpoint>,
    /// The cluster's id as this broker knows it (Metadata answers null while a new cluster's
    /// brokers have not agreed on it yet).
    pub cluster_id: ClusterIdentity,
    /// Create a topic on the first Metadata or Produce request that names it.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of CreateTopics with -1.
    pub default_partitions: u32,
    /// Longest a fetch may wait for data, whatever the client asks.
    pub fetch_wait_ms_max: u64,
    /// The logs' settings: the broker-wide topic defaults, and the largest batch accepted.
    pub log: LogConfig,
    /// What SASL listeners accept.
    pub sasl: SaslConfig,
    /// How requests are authorized (`crate::authorizer`).
    pub authorizer: AuthorizerConfig,
}

impl BrokerConfig {
    /// The advertised address of `listener` (every listener of a broker has one).
    pub fn advertised_on(&self, listener: &ListenerName) -> Option<&Endpoint> {
        self.advertised
            .iter()
            .find(|endpoint| endpoint.name == *listener)
    }
}

/// Why a topic a request names cannot be used (yet).
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Catalog(CatalogError),
    /// The controller is creating it; the client retries.
    #[error("topic '{0}' is being created")]
    BeingCreated(String),
}

impl TopicError {
    /// The Kafka error code to answer.
    pub fn code(&self) -> i16 {
        match self {
            TopicError::Catalog(error) => crate::errors::catalog_error_code(error),
            TopicError::BeingCreated(_) => kafka_protocol::ResponseError::LeaderNotAvailable.code(),
        }
    }
}

/// Bytes to write on the connection: memory, or a range of a segment file sent with splice.
#[derive(Debug)]
pub enum ResponsePart {
    Memory(Bytes),
    File {
        /// The segment file's descriptor, shared with the shard that owns it (which counts it
        /// open until the last holder drops it).
        file: Arc<ReadDescriptor>,
        position: u64,
        length: u64,
    },
}

/// The answer to one request: nothing (produce with acks=0), or a framed response in parts.
pub type Reply = Vec<ResponsePart>;

/// The deferred part of handling a request. `Err` closes the connection with that reason.
pub type PendingReply = LocalBoxFuture<'static, Result<Reply, String>>;

/// Who sent a request, as the group coordinator records its members.
#[derive(Debug, Clone)]
pub struct Client {
    /// The request header's client id.
    pub id: String,
    /// The peer's address as Kafka shows it: `/` and the IP.
    pub host: String,
    /// The listener the connection came in on (which addresses it is told), and who it is.
    pub security: ConnectionSecurity,
}

/// One shard's broker: cheap to share between the shard's connections (`Rc`).
pub struct Broker {
    pub context: ShardContext,
    pub catalog: Arc<Catalog>,
    /// The users' SCRAM credentials, which SASL checks (shared by every shard).
    pub credentials: Arc<Credentials>,
    /// The client quotas and every client's usage of them (shared by every shard).
    pub quotas: Arc<QuotaUsage>,
    /// The ACLs requests are authorized against (shared by every shard).
    pub acls: Arc<Acls>,
    pub config: BrokerConfig,
    pub metrics: Arc<ShardMetrics>,
    /// The other brokers and the controller, when this broker is one of several.
    pub cluster: Option<Cluster>,
    /// The shard's group coordinators, and the way to every group's.
    pub groups: Rc<ShardGroups>,
    /// The shard's transaction coordinators, and the way to every transactional id's.
    pub transactions: Rc<ShardTransactions>,
}

impl Broker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        context: ShardContext,
        catalog: Arc<Catalog>,
        credentials: Arc<Credentials>,
        quotas: Arc<QuotaUsage>,
        acls: Arc<Acls>,
        config: BrokerConfig,
        metrics: Arc<ShardMetrics>,
        cluster: Option<Rc<ShardCluster>>,
        groups: Rc<ShardGroups>,
        transactions: Rc<ShardTransactions>,
    ) -> Rc<Broker> {
        let broker = Rc::new(Broker {
            context,
            catalog,
            credentials,
            quotas,
            acls,
            config,
            metrics,
            cluster: cluster.map(Cluster::new),
            groups,
            transactions,
        });
        broker.transactions.attach_broker(&broker);
        crate::transactions::markers::serve_offsets_markers(&broker);
        crate::transactions::verification::serve_verifications(&broker);
        broker
    }

    /// Starts handling one request frame. Returns once everything that must happen in
    /// request order has happened; `Err` is a reason to close the connection. `routing` counts
    /// where the connection's data requests go (the connection handover's rule).
    ///
    /// Every request of a connection passes here, in order, with the connection's `security`
    /// (its listener and principal, `crate::listener`), right after its header is decoded and
    /// before it is dispatched: SaslHandshake and SaslAuthenticate change its authentication
    /// (`crate::sasl`) and principal here, and its authentication admits every other request or
    /// closes the connection. Once answered, the request's usage counts against the client's
    /// quotas (`crate::quotas`): a client over one is told so in the response and `throttle`,
    /// the connection's, is muted.
    pub async fn start(
        self: &Rc<Self>,
        frame: Bytes,
        peer: SocketAddr,
        security: &mut ConnectionSecurity,
        routing: &mut Routing,
        throttle: &Rc<ConnectionThrottle>,
    ) -> Result<PendingReply, String> {
        let request_bytes = frame.len() as u64;
        if security.authentication.expects_raw_token() {
            let reply = self.raw_sasl_token(&frame, security);
            return Ok(Box::pin(async move { Ok(reply) }));
        }
        let request = match DecodedRequest::decode(frame) {
            Ok(request) => request,
            Err(RequestError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let reply = encode_reply(
                    ApiKey::ApiVersions,
                    api_versions::FALLBACK_RESPONSE_VERSION,
                    correlation_id,
                    &api_versions::fallback_response(),
                );
                return Ok(Box::pin(async move { reply }));
            }
            Err(error) => return Err(error.to_string()),
        };
        security
            .authentication
            .admit(request.api_key, Instant::now())?;
        let header = Header {
            api_key: request.api_key,
            api_version: request.api_version,
            correlation_id: request.correlation_id(),
        };
        let started_at = Instant::now();
        // Who the quotas know the client as, when some quota is set.
        let quota_client = self.quotas.is_active().then(|| {
            let client_id = request.header.client_id.as_deref().unwrap_or_default();
            (
                quotas::quota_user(&security.principal).to_owned(),
                client_id.to_owned(),
            )
        });
        // A produce request's bytes count as it starts: the mute then holds back the next one.
        let produce_throttle = match (&quota_client, header.api_key) {
            (Some((user, client_id)), ApiKey::Produce) => {
                let now = Instant::now();
                let throttled = self.quotas.record(
                    QuotaKey::ProducerByteRate,
                    user,
                    client_id,
                    request_bytes as f64,
                    now,
                );
                throttle.mute_until(now + throttled);
                throttled
            }
            _ => Duration::ZERO,
        };
        let broker = self.clone();
        // Who asks, as the handlers authorize it (`crate::authorizer`) and the group
        // coordinator records its members.
        let client = Client {
            id: request
                .header
                .client_id
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            host: format!("/{}", peer.ip()),
            security: security.clone(),
        };
        let pending: PendingReply =
            match request.decode_body().map_err(|error| error.to_string())? {
                Body::ListOffsetsV0(list) => {
                    let broker = broker.clone();
                    Box::pin(async move {
                        header.reply_versioned(
                            &handlers::list_offsets::handle_v0(&broker, &client, list).await,
                        )
                    })
                }
                Body::MessageFormatV0V1(refused) => {
                    refuse_message_format_v0_v1(header, &refused, peer)?
                }
                Body::Current(body) => {
                    routing.count_request(&self.context, &body);

                    match body {
                        // The connection's authentication changes in request order.
                        RequestKind::SaslHandshake(handshake) => {
                            let response = security.authentication.handshake(
                                header.api_version,
                                &handshake.mechanism,
                                &self.config.sasl,
                            );
                            let reply = header.reply(&response);
                            Box::pin(async move { reply })
                        }
                        RequestKind::SaslAuthenticate(request) => {
                            let answered = self.authenticate(&request.auth_bytes, security);
                            let reply = header.reply(&sasl::authenticate_response(answered));
                            Box::pin(async move { reply })
                        }
                        // The only API with work that must happen in request order.
                        RequestKind::Produce(produce) => {
                            // The frame's last holder besides the batches: with it gone, a large
                            // batch owns its bytes and goes to the engine without a copy.
                            drop(request);
                            handlers::produce::start(broker.clone(), header, &client, produce).await
                        }
                        body => {
                            let broker = broker.clone();
                            let draining = routing.draining();
                            Box::pin(
                                async move { broker.answer(header, client, body, &draining).await },
                            )
                        }
                    }
                }
            };
        let throttle = throttle.clone();
        Ok(Box::pin(async move {
            let (mut reply, handling) = quotas::PollTimed::new(pending).await;
            let now = Instant::now();
            broker
                .metrics
                .request_answered(header.api_key, now - started_at, now);
            if let (Some((user, client_id)), Ok(reply)) = (quota_client, reply.as_mut()) {
                let record = |key, value| broker.quotas.record(key, &user, &client_id, value, now);
                let fetch_throttle = match header.api_key {
                    ApiKey::Fetch => record(
                        QuotaKey::ConsumerByteRate,
                        quotas::reply_bytes(reply) as f64,
                    ),
                    _ => Duration::ZERO,
                };
                let handling_throttle =
                    record(QuotaKey::RequestPercentage, handling.as_nanos() as f64);
                let throttled = produce_throttle.max(fetch_throttle).max(handling_throttle);
                if !throttled.is_zero() {
                    let throttle_ms = throttled.as_millis().min(i32::MAX as u128) as i32;
                    quotas::set_throttle_time(
                        reply,
                        header.api_key,
                        header.api_version,
                        throttle_ms,
                    );
                    throttle.mute_until(now + throttled);
                    broker.metrics.request_throttled(throttled);
                }
            }
            reply
        }))
    }

    /// Answers a SASL token sent without a Kafka header (after SaslHandshake v0) with the
    /// mechanism's answer, length-prefixed as it came; a failure is answered with nothing (the
    /// connection closes, as Kafka's does).
    fn raw_sasl_token(&self, token: &[u8], security: &mut ConnectionSecurity) -> Reply {
        match self.authenticate(token, security) {
            Ok(answer) => {
                let mut framed = BytesMut::with_capacity(4 + answer.auth_bytes.len());
                framed.extend_from_slice(&(answer.auth_bytes.len() as u32).to_be_bytes());
                framed.extend_from_slice(&answer.auth_bytes);
                vec![ResponsePart::Memory(framed.freeze())]
            }
            Err(_) => Vec::new(),
        }
    }

    /// Takes one SASL token of the connection's authentication; a session opened makes its
    /// user the connection's principal.
    fn authenticate(
        &self,
        token: &[u8],
        security: &mut ConnectionSecurity,
    ) -> Result<sasl::Authenticated, sasl::AuthenticationFailure> {
        let answered = security.authentication.authenticate(
            token,
            &self.config.sasl,
            &self.credentials,
            Instant::now(),
        );
        if let Some(principal) = security.authentication.principal() {
            security.principal = principal.to_string();
        }
        answered
    }

    /// `draining`: the connection's, which a long poll watches (see [`Draining`]).
    async fn answer(
        self: Rc<Self>,
        header: Header,
        client: Client,
        body: RequestKind,
        draining: &Draining,
    ) -> Result<Reply, String> {
        use handlers::groups;
        let version = header.api_version;
        match body {
            RequestKind::ApiVersions(_) => header.reply(&api_versions::response()),
            RequestKind::Metadata(request) => header.reply(&handlers::metadata::handle(
                &self,
                header.api_version,
                &client,
                request,
            )),
            RequestKind::Fetch(request) => {
                handlers::fetch::handle(&self, header, &client, request, draining).await
            }
            RequestKind::ListOffsets(request) => header.reply_versioned(
                &handlers::list_offsets::handle(&self, header.api_version, &client, request).await,
            ),
            RequestKind::CreateTopics(request) => header.reply_versioned(
                &handlers::create_topics::handle(&self, header.api_version, &client, request).await,
            ),
            RequestKind::DeleteTopics(request) => header.reply_versioned(
                &handlers::delete_topics::handle(&self, header.api_version, &client, request).await,
            ),
            RequestKind::CreatePartitions(request) => {
                header.reply(&handlers::create_partitions::handle(&self, &client, request).await)
            }
            RequestKind::DescribeConfigs(request) => header.reply_versioned(
                &handlers::describe_configs::handle(&self, header.api_version, &client, request),
            ),
            RequestKind::AlterConfigs(request) => {
                header.reply(&handlers::alter_configs::handle(&self, &client, request).await)
            }
            RequestKind::AlterPartitionReassignments(request) => header.reply(
                &handlers::alter_partition_reassignments::handle(&self, &client, request).await,
            ),
            RequestKind::ListPartitionReassignments(request) => header.reply(
                &handlers::list_partition_reassignments::handle(&self, &client, request),
            ),
            RequestKind::IncrementalAlterConfigs(request) => header
                .reply(&handlers::incremental_alter_configs::handle(&self, &client, request).await),
            RequestKind::DeleteRecords(request) => {
                header.reply(&handlers::delete_records::handle(&self, &client, request).await)
            }
            RequestKind::DescribeProducers(request) => {
                header.reply(&handlers::describe_producers::handle(&self, &client, request).await)
            }
            RequestKind::InitProducerId(request) => header
                .reply(&handlers::init_producer_id::handle(&self, version, &client, request).await),
            RequestKind::AddPartitionsToTxn(request) => header.reply(
                &handlers::add_partitions_to_txn::handle(&self, version, &client, request).await,
            ),
            RequestKind::AddOffsetsToTxn(request) => header.reply(
                &handlers::add_offsets_to_txn::handle(&self, version, &client, request).await,
            ),
            RequestKind::EndTxn(request) => {
                header.reply(&handlers::end_txn::handle(&self, version, &client, request).await)
            }
            RequestKind::DescribeTransactions(request) => header
                .reply(&handlers::describe_transactions::handle(&self, &client, request).await),
            RequestKind::ListTransactions(request) => {
                header.reply(&handlers::list_transactions::handle(&self, &client, request).await)
            }
            RequestKind::FindCoordinator(request) => header.reply(
                &handlers::find_coordinator::handle(&self, version, &client, request),
            ),
            RequestKind::JoinGroup(request) => {
                header.reply(&groups::join_group::handle(&self, version, &client, request).await)
            }
            RequestKind::SyncGroup(request) => {
                header.reply(&groups::sync_group::handle(&self, &client, request).await)
            }
            RequestKind::Heartbeat(request) => {
                header.reply(&groups::heartbeat::handle(&self, &client, request).await)
            }
            RequestKind::LeaveGroup(request) => {
                header.reply(&groups::leave_group::handle(&self, version, &client, request).await)
            }
            RequestKind::OffsetCommit(request) => header.reply_versioned(
                &groups::offset_commit::handle(&self, version, &client, request).await,
            ),
            RequestKind::OffsetFetch(request) => header.reply_versioned(
                &groups::offset_fetch::handle(&self, version, &client, request).await,
            ),
            RequestKind::ListGroups(request) => {
                header.reply(&groups::list_groups::handle(&self, &client, request).await)
            }
            RequestKind::DescribeGroups(request) => header
                .reply(&groups::describe_groups::handle(&self, version, &client, request).await),
            RequestKind::DeleteGroups(request) => {
                header.reply(&groups::delete_groups::handle(&self, &client, request).await)
            }
            RequestKind::OffsetDelete(request) => {
                header.reply(&groups::offset_delete::handle(&self, &client, request).await)
            }
            RequestKind::TxnOffsetCommit(request) => {
                header.reply(&groups::txn_offset_commit::handle(&self, &client, request).await)
            }
            RequestKind::ConsumerGroupHeartbeat(request) => header
                .reply(&groups::consumer_group_heartbeat::handle(&self, &client, request).await),
            RequestKind::AlterUserScramCredentials(request) => header.reply(
                &handlers::alter_user_scram_credentials::handle(&self, &client, request).await,
            ),
            RequestKind::AlterClientQuotas(request) => {
                header.reply(&handlers::alter_client_quotas::handle(&self, request).await)
            }
            RequestKind::DescribeClientQuotas(request) => {
                header.reply(&handlers::describe_client_quotas::handle(&self, request))
            }
            RequestKind::DescribeUserScramCredentials(request) => header.reply(
                &handlers::describe_user_scram_credentials::handle(&self, &client, request),
            ),
            RequestKind::CreateAcls(request) => {
                header.reply(&handlers::acls::create_acls::handle(&self, &client, request).await)
            }
            RequestKind::DescribeAcls(request) => header.reply(
                &handlers::acls::describe_acls::handle(&self, &client, request),
            ),
            RequestKind::DeleteAcls(request) => {
                header.reply(&handlers::acls::delete_acls::handle(&self, &client, request).await)
            }
            RequestKind::ConsumerGroupDescribe(request) => header
                .reply(&groups::consumer_group_describe::handle(&self, &client, request).await),
            // Decoding succeeds only for APIs in the implemented table, each handled above.
            other => Err(format!("no handler for {:?}", other)),
        }
    }

    /// Makes `changes` to the users' credentials: durably in the data directory on a broker
    /// alone, through the controller in a cluster; resolves once this broker authenticates
    /// with them. `Err`: the Kafka error to answer every user concerned.
    pub async fn alter_credentials(
        &self,
        changes: Vec<CredentialChange>,
    ) -> Result<(), (kafka_protocol::ResponseError, String)> {
        match &self.cluster {
            Some(cluster) => cluster.alter_credentials(changes).await.map_err(|error| {
                (
                    kafka_protocol::ResponseError::try_from_code(error.code)
                        .unwrap_or(kafka_protocol::ResponseError::UnknownServerError),
                    error.message,
                )
            }),
            None => self.credentials.alter(&changes).map_err(|error| {
                engine::log_rate_limited!("ferrite: altering SCRAM credentials: {error}");
                (
                    kafka_protocol::ResponseError::UnknownServerError,
                    format!("the broker could not write its credentials: {error}"),
                )
            }),
        }
    }

    /// The topic named `name`, created first if it does not exist and auto-creation is on
    /// and `allow`ed. In a cluster the controller creates it: the first request starts that
    /// and is answered LEADER_NOT_AVAILABLE, and clients retry as they do with Kafka.
    pub fn topic_or_create(&self, name: &str, allow: bool) -> Result<Arc<Topic>, TopicError> {
        if let Some(topic) = self.catalog.topics().get(name) {
            return Ok(topic.clone());
        }
        if !(allow && self.config.auto_create_topics) {
            return Err(TopicError::Catalog(CatalogError::UnknownTopic(
                name.to_owned(),
            )));
        }
        if let Some(cluster) = &self.cluster {
            if name == OFFSETS_TOPIC {
                cluster.ensure_offsets_topic();
                return Err(TopicError::BeingCreated(name.to_owned()));
            }
            engine::catalog::validate_topic_name(name).map_err(TopicError::Catalog)?;
            let creating = cluster.create_topic(
                name.to_owned(),
                self.config.default_partitions,
                None,
                Default::default(),
            );
            let topic = name.to_owned();
            glommio::spawn_local(async move {
                match creating.await {
                    // Several requests asked for it at once; one of them created it.
                    Err(error)
                        if error.code
                            == kafka_protocol::ResponseError::TopicAlreadyExists.code() => {}
                    Err(error) => {
                        engine::log_rate_limited!(
                            "ferrite: auto-creating topic '{topic}': {}",
                            error.message
                        )
                    }
                    Ok(()) => {}
                }
            })
            .detach();
            return Err(TopicError::BeingCreated(name.to_owned()));
        }
        match self.catalog.create_topic(
            name,
            i64::from(self.config.default_partitions),
            Default::default(),
            false,
        ) {
            Ok(topic) => {
                eprintln!(
                    "ferrite: auto-created topic '{name}' with {} partition(s)",
                    topic.partitions
                );
                Ok(topic)
            }
            // Another shard created it between our look and our create.
            Err(CatalogError::TopicExists(_)) => self
                .catalog
                .topics()
                .get(name)
                .cloned()
                .ok_or_else(|| TopicError::Catalog(CatalogError::UnknownTopic(name.to_owned()))),
            Err(error) => Err(TopicError::Catalog(error)),
        }
    }
}

/// Answers a request in a version of message formats v0/v1 (Produce v0–2, Fetch v0–3)
/// UNSUPPORTED_VERSION on every partition, in the request's own version; `Err` (close) for a
/// produce request with acks=0, whose client reads no answer: Kafka answers such a request's
/// errors by closing the connection.
fn refuse_message_format_v0_v1(
    header: Header,
    refused: &RefusedRequest,
    peer: SocketAddr,
) -> Result<PendingReply, String> {
    engine::log_rate_limited!(
        "ferrite: answering {:?} v{} from {peer} UNSUPPORTED_VERSION on {} partition(s): message formats v0 and v1 are not supported",
        refused.api_key,
        refused.api_version,
        refused.partition_count()
    );
    if !refused.wants_answer() {
        return Err(format!(
            "{:?} v{} with acks=0: message formats v0 and v1 are not supported",
            refused.api_key, refused.api_version
        ));
    }
    let reply = header.reply_versioned(refused);
    Ok(Box::pin(async move { reply }))
}

/// The header fields a response needs.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl Header {
    /// Encodes `body` as this request's framed response.
    pub fn reply(&self, body: &impl Encodable) -> Result<Reply, String> {
        encode_reply(self.api_key, self.api_version, self.correlation_id, body)
    }

    /// Encodes `body` as this request's framed response, in a version older than the generated
    /// codec writes if the request came in one.
    pub fn reply_versioned(&self, body: &impl VersionedResponse) -> Result<Reply, String> {
        let mut out = BytesMut::new();
        put_response_with(
            &mut out,
            self.api_key,
            self.api_version,
            self.correlation_id,
            |encoded| body.encode_in(self.api_version, encoded),
        )?;
        Ok(vec![ResponsePart::Memory(out.freeze())])
    }
}

fn encode_reply(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> Result<Reply, String> {
    let mut out = BytesMut::new();
    put_response(&mut out, api_key, api_version, correlation_id, body)?;
    Ok(vec![ResponsePart::Memory(out.freeze())])
}
