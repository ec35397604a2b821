//! DescribeUserScramCredentials (v0): which SCRAM mechanisms (and iterations) each user has,
//! never a salt or a key; every user when the request names none, as Kafka answers.

use engine::acls::Operation;
use engine::credentials::UserCredentials;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};

pub fn handle(
    broker: &Broker,
    client: &Client,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !broker.authorized_on_cluster(client, Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let table = broker.credentials.table();
    let described = |user: &str, credentials: &UserCredentials| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_owned()))
            .with_credential_infos(
                credentials
                    .iter()
                    .map(|(mechanism, credential)| {
                        CredentialInfo::default()
                            .with_mechanism(mechanism.kafka_type())
                            .with_iterations(credential.iterations as i32)
                    })
                    .collect(),
            )
    };
    let refused = |user: &str, error: ResponseError, message: &str| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_owned()))
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message.to_owned())))
    };
    let results = match request.users.filter(|users| !users.is_empty()) {
        None => table
            .iter()
            .map(|(user, credentials)| described(user, credentials))
            .collect(),
        Some(users) => {
            let names: Vec<&str> = users.iter().map(|user| user.name.as_str()).collect();
            let mut results = Vec::with_capacity(names.len());
            for (at, name) in names.iter().enumerate() {
                if names[..at].contains(name) {
                    continue;
                }
                results.push(if names[at + 1..].contains(name) {
                    refused(
                        name,
                        ResponseError::DuplicateResource,
                        "Cannot describe SCRAM credentials for the same user twice in a single request",
                    )
                } else {
                    match table.get(*name) {
                        Some(credentials) => described(name, credentials),
                        None => refused(
                            name,
                            ResponseError::ResourceNotFound,
                            "Attempt to describe a user credential that does not exist",
                        ),
                    }
                });
            }
            results
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
