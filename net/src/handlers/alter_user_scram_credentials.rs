//! AlterUserScramCredentials (v0): adds, replaces and deletes users' SCRAM credentials, checked
//! as Kafka's controller checks them. The client sends `SaltedPassword`, never the password; the
//! broker keeps only the keys derived from it (`sasl::scram`). A user's changes are made
//! together or refused together, each user answered on its own; on a broker alone they are
//! durable in the data directory before the answer, in a cluster committed in the metadata log
//! and applied here (so a client authenticates with them at once, on this broker).

use engine::acls::Operation;
use std::collections::BTreeMap;

use engine::credentials::{CredentialChange, ScramMechanism};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};
use crate::sasl::scram::{self, ITERATIONS_MAX, ITERATIONS_MIN};

/// Why one user's changes are refused: a Kafka code and its message.
type Refusal = (ResponseError, String);

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let authorized = broker.authorized_on_cluster(client, Operation::Alter);
    let (changes, mut refused) = match authorized {
        true => check(broker, &request),
        false => (BTreeMap::new(), BTreeMap::new()),
    };
    let unauthorized = (!authorized).then(|| {
        (
            ResponseError::ClusterAuthorizationFailed,
            format!("{} may not ALTER the cluster", client.security.principal),
        )
    });
    let changes: Vec<CredentialChange> = changes.into_values().flatten().collect();
    // Every user whose changes were sent shares their fate.
    let applied_failed = match changes.is_empty() {
        true => None,
        false => broker.alter_credentials(changes).await.err(),
    };
    let order = request
        .deletions
        .iter()
        .map(|deletion| &deletion.name)
        .chain(request.upsertions.iter().map(|upsertion| &upsertion.name));
    let mut answered: Vec<String> = Vec::new();
    let mut results = Vec::new();
    for user in order {
        let user = user.to_string();
        if answered.contains(&user) {
            continue;
        }
        let refusal = unauthorized
            .clone()
            .or_else(|| refused.remove(&user))
            .or_else(|| applied_failed.clone());
        let result = AlterUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.clone()));
        results.push(match refusal {
            None => result,
            Some((code, message)) => result
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        });
        answered.push(user);
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// The changes of every user whose changes all pass Kafka's checks, and the refusal of each
/// other user.
fn check(
    broker: &Broker,
    request: &AlterUserScramCredentialsRequest,
) -> (
    BTreeMap<String, Vec<CredentialChange>>,
    BTreeMap<String, Refusal>,
) {
    let table = broker.credentials.table();
    let mut changes: BTreeMap<String, Vec<CredentialChange>> = BTreeMap::new();
    let mut refused: BTreeMap<String, Refusal> = BTreeMap::new();
    let mut seen: Vec<(String, i8)> = Vec::new();
    let refuse = |refused: &mut BTreeMap<String, Refusal>, user: &str, refusal: Refusal| {
        refused.entry(user.to_owned()).or_insert(refusal);
    };
    let deletions = request
        .deletions
        .iter()
        .map(|deletion| (deletion.name.to_string(), deletion.mechanism, None));
    let upsertions = request.upsertions.iter().map(|upsertion| {
        (
            upsertion.name.to_string(),
            upsertion.mechanism,
            Some(upsertion),
        )
    });
    for (user, mechanism_type, upsertion) in deletions.chain(upsertions) {
        if seen.contains(&(user.clone(), mechanism_type)) {
            refuse(
                &mut refused,
                &user,
                (
                    ResponseError::DuplicateResource,
                    "A user credential cannot be altered twice in the same request".to_owned(),
                ),
            );
            continue;
        }
        seen.push((user.clone(), mechanism_type));
        let checked = check_one(&table, &user, mechanism_type, upsertion);
        match checked {
            Ok(change) => changes.entry(user).or_default().push(change),
            Err(refusal) => refuse(&mut refused, &user, refusal),
        }
    }
    changes.retain(|user, _| !refused.contains_key(user));
    (changes, refused)
}

fn check_one(
    table: &engine::credentials::CredentialTable,
    user: &str,
    mechanism_type: i8,
    upsertion: Option<
        &kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion,
    >,
) -> Result<CredentialChange, Refusal> {
    if user.is_empty() {
        return Err((
            ResponseError::UnacceptableCredential,
            "Username must not be empty".to_owned(),
        ));
    }
    if user.len() > scram::USER_NAME_BYTES_MAX {
        return Err((
            ResponseError::UnacceptableCredential,
            format!(
                "Username must be at most {} bytes",
                scram::USER_NAME_BYTES_MAX
            ),
        ));
    }
    let Some(mechanism) = ScramMechanism::from_kafka_type(mechanism_type) else {
        return Err((
            ResponseError::UnsupportedSaslMechanism,
            "Unknown SCRAM mechanism".to_owned(),
        ));
    };
    let Some(upsertion) = upsertion else {
        if !table
            .get(user)
            .is_some_and(|credentials| credentials.contains_key(&mechanism))
        {
            return Err((
                ResponseError::ResourceNotFound,
                "Attempt to delete a user credential that does not exist".to_owned(),
            ));
        }
        return Ok(CredentialChange::Delete {
            user: user.to_owned(),
            mechanism,
        });
    };
    let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
    if iterations < ITERATIONS_MIN {
        return Err((
            ResponseError::UnacceptableCredential,
            format!("Too few iterations: at least {ITERATIONS_MIN}"),
        ));
    }
    if iterations > ITERATIONS_MAX {
        return Err((
            ResponseError::UnacceptableCredential,
            format!("Too many iterations: at most {ITERATIONS_MAX}"),
        ));
    }
    if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
        return Err((
            ResponseError::UnacceptableCredential,
            "An empty salt or salted password".to_owned(),
        ));
    }
    Ok(CredentialChange::Upsert {
        user: user.to_owned(),
        mechanism,
        credential: scram::credential_from_salted_password(
            mechanism,
            &upsertion.salt,
            iterations,
            &upsertion.salted_password,
        ),
    })
}
