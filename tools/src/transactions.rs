//! `ferrite transactions list|describe`: transactions administration over the Kafka protocol
//! (ListTransactions on every broker, DescribeTransactions on each id's coordinator, found
//! with FindCoordinator), so it works against any Kafka-compatible broker. Modelled on
//! Kafka's `kafka-transactions.sh`.
//!
//! Text output is one line per fact, as `ferrite group` prints; `--json` gives a form scripts
//! can parse.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::{
    DescribeTransactionsRequest, ListTransactionsRequest, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::{AdminError, BrokerArguments, EXIT_CODES_HELP};
use crate::client::cluster::Cluster;
use crate::group::print_json;
use crate::group::requests::{with_coordinator_of, TRANSACTION_KEY_TYPE};

#[derive(clap::Args)]
pub struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print every transactional id the brokers coordinate: its producer id and the state of
    /// its transaction, one per line, sorted by id.
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        broker: BrokerArguments,
        /// Only transactions in these states (Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort); repeatable.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only these producer ids; repeatable.
        #[arg(long = "producer-id", value_name = "ID")]
        producer_ids: Vec<i64>,
        /// Print one JSON array of {transactional_id, producer_id, state}.
        #[arg(long)]
        json: bool,
    },
    /// Print each transactional id's producer id and epoch, state, timeout, start time and the
    /// partitions of its open transaction.
    #[command(after_help = EXIT_CODES_HELP)]
    Describe {
        #[command(flatten)]
        broker: BrokerArguments,
        /// The transactional ids to describe.
        #[arg(required = true)]
        transactional_ids: Vec<String>,
        /// Print one JSON array with an object per id.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(arguments: Arguments) -> std::process::ExitCode {
    let outcome = match arguments.command {
        Command::List {
            broker,
            states,
            producer_ids,
            json,
        } => list(&broker, &states, &producer_ids, json),
        Command::Describe {
            broker,
            transactional_ids,
            json,
        } => describe(&broker, &transactional_ids, json),
    };
    crate::admin::exit("transactions", outcome)
}

/// One transaction as `list` prints it.
#[derive(serde::Serialize)]
struct ListedTransaction {
    transactional_id: String,
    producer_id: i64,
    state: String,
}

fn list(
    broker: &BrokerArguments,
    states: &[String],
    producer_ids: &[i64],
    json: bool,
) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let metadata = cluster.metadata(Some(&[]))?;
    let mut broker_ids: Vec<i32> = metadata
        .brokers
        .iter()
        .map(|broker| broker.node_id.0)
        .collect();
    broker_ids.sort_unstable();
    let request = ListTransactionsRequest::default()
        .with_state_filters(states.iter().cloned().map(StrBytes::from_string).collect())
        .with_producer_id_filters(producer_ids.iter().copied().map(ProducerId).collect());
    let mut listed = BTreeMap::new();
    for broker_id in broker_ids {
        let connection = cluster.broker(broker_id)?;
        let version = connection.version::<ListTransactionsRequest>()?;
        let response = connection.send(&request, version, Duration::ZERO)?;
        if let Some(error) = AdminError::from_code(
            format!("transactions of broker {broker_id}"),
            response.error_code,
            None,
        ) {
            return Err(error);
        }
        if let Some(unknown) = response.unknown_state_filters.first() {
            return Err(AdminError::Cluster(format!(
                "broker {broker_id} knows no transaction state {unknown}"
            )));
        }
        for transaction in response.transaction_states {
            let transactional_id = transaction.transactional_id.0.to_string();
            listed.insert(
                transactional_id.clone(),
                ListedTransaction {
                    transactional_id,
                    producer_id: transaction.producer_id.0,
                    state: transaction.transaction_state.to_string(),
                },
            );
        }
    }
    let listed: Vec<ListedTransaction> = listed.into_values().collect();
    if json {
        return print_json(&listed);
    }
    for transaction in &listed {
        println!(
            "transactional-id {} producer-id {} state {}",
            transaction.transactional_id, transaction.producer_id, transaction.state
        );
    }
    Ok(())
}

/// One transactional id as `describe` prints it.
#[derive(serde::Serialize)]
struct DescribedTransaction {
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    state: String,
    timeout_ms: i32,
    /// -1: no transaction open.
    start_time_ms: i64,
    partitions: Vec<(String, i32)>,
}

fn describe(
    broker: &BrokerArguments,
    transactional_ids: &[String],
    json: bool,
) -> Result<(), AdminError> {
    let mut cluster = Cluster::connect(&broker.bootstrap)?;
    let mut described = Vec::with_capacity(transactional_ids.len());
    for transactional_id in transactional_ids {
        described.push(with_coordinator_of(
            &mut cluster,
            TRANSACTION_KEY_TYPE,
            transactional_id,
            |connection| {
                let version = connection.version::<DescribeTransactionsRequest>()?;
                let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![
                    TransactionalId(StrBytes::from_string(transactional_id.clone())),
                ]);
                let response = connection.send(&request, version, Duration::ZERO)?;
                let state = response
                    .transaction_states
                    .into_iter()
                    .find(|state| state.transactional_id.0.as_str() == transactional_id)
                    .ok_or_else(|| {
                        AdminError::Cluster(format!(
                            "the DescribeTransactions response says nothing of {transactional_id}"
                        ))
                    })?;
                if let Some(error) = AdminError::from_code(
                    format!("transactional id {transactional_id}"),
                    state.error_code,
                    None,
                ) {
                    return Err(error);
                }
                Ok(DescribedTransaction {
                    transactional_id: transactional_id.clone(),
                    producer_id: state.producer_id.0,
                    producer_epoch: state.producer_epoch,
                    state: state.transaction_state.to_string(),
                    timeout_ms: state.transaction_timeout_ms,
                    start_time_ms: state.transaction_start_time_ms,
                    partitions: state
                        .topics
                        .iter()
                        .flat_map(|topic| {
                            topic
                                .partitions
                                .iter()
                                .map(|partition| (topic.topic.0.to_string(), *partition))
                        })
                        .collect(),
                })
            },
        )?);
    }
    if json {
        return print_json(&described);
    }
    for transaction in &described {
        println!(
            "transactional-id {} producer-id {} producer-epoch {} state {} timeout-ms {} \
             start-time-ms {}",
            transaction.transactional_id,
            transaction.producer_id,
            transaction.producer_epoch,
            transaction.state,
            transaction.timeout_ms,
            transaction.start_time_ms
        );
        for (topic, partition) in &transaction.partitions {
            println!(
                "transactional-id {} partition {topic} {partition}",
                transaction.transactional_id
            );
        }
    }
    Ok(())
}
