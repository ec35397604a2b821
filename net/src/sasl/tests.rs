//! A connection's authentication as a client sees it: what is served before and after, PLAIN
//! and SCRAM against one stored credential, failures, re-authentication.

use super::scram::test_client::ScramClient;
use super::*;
use engine::credentials::{CredentialChange, CredentialTable};

fn credentials_of(users: &[(&str, &[u8])]) -> Credentials {
    let credentials = Credentials::in_memory(CredentialTable::new());
    let changes: Vec<CredentialChange> = users
        .iter()
        .flat_map(|(user, password)| {
            ScramMechanism::ALL.into_iter().map(move |mechanism| {
                let salt = scram::new_salt().unwrap();
                let salted = scram::salted_password(mechanism, password, &salt, 4096);
                CredentialChange::Upsert {
                    user: user.to_string(),
                    mechanism,
                    credential: scram::credential_from_salted_password(
                        mechanism, &salt, 4096, &salted,
                    ),
                }
            })
        })
        .collect();
    credentials.alter(&changes).unwrap();
    credentials
}

fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

#[test]
fn only_the_sasl_apis_are_served_before_authentication() {
    let now = Instant::now();
    let connection = Authentication::new(true);
    assert!(connection.admit(ApiKey::ApiVersions, now).is_ok());
    assert!(connection.admit(ApiKey::SaslHandshake, now).is_ok());
    assert!(connection.admit(ApiKey::SaslAuthenticate, now).is_ok());
    let refused = connection.admit(ApiKey::Metadata, now).unwrap_err();
    assert!(refused.contains("before SASL authentication"), "{refused}");
    assert_eq!(connection.frame_bytes_max(100 << 20, now), 512 << 10);
    // A PLAINTEXT listener's connection needs none, and refuses a handshake.
    let mut plaintext = Authentication::new(false);
    assert!(plaintext.admit(ApiKey::Produce, now).is_ok());
    let answer = plaintext.handshake(1, "PLAIN", &SaslConfig::default());
    assert_eq!(answer.error_code, ResponseError::IllegalSaslState.code());
    assert!(plaintext.take_closing().is_some());
}

#[test]
fn plain_and_both_scram_mechanisms_authenticate_the_same_user() {
    let credentials = credentials_of(&[("alice", b"secret")]);
    let config = SaslConfig::default();
    let now = Instant::now();

    let mut connection = Authentication::new(true);
    assert_eq!(connection.handshake(1, "PLAIN", &config).error_code, 0);
    let answer = connection.authenticate(&plain("alice", "secret"), &config, &credentials, now);
    assert_eq!(answer.unwrap().session_lifetime_ms, 0);
    assert_eq!(connection.principal().unwrap().to_string(), "User:alice");
    assert!(connection.admit(ApiKey::Produce, now).is_ok());
    assert!(connection.take_closing().is_none());

    for mechanism in ScramMechanism::ALL {
        let mut connection = Authentication::new(true);
        let handshake = connection.handshake(1, mechanism.name(), &config);
        assert_eq!(handshake.error_code, 0);
        assert_eq!(handshake.mechanisms.len(), 3);
        let client = ScramClient::new(mechanism, "alice", b"secret");
        let server_first = connection
            .authenticate(&client.first(), &config, &credentials, now)
            .unwrap();
        assert!(connection.admit(ApiKey::Produce, now).is_err());
        let (client_final, expected) = client.finish(&server_first.auth_bytes);
        let server_final = connection
            .authenticate(&client_final, &config, &credentials, now)
            .unwrap();
        assert_eq!(server_final.auth_bytes, expected);
        assert_eq!(connection.principal().unwrap().user, "alice");
        assert!(connection.admit(ApiKey::Fetch, now).is_ok());
    }
}

#[test]
fn wrong_credentials_fail_and_close_the_connection() {
    let credentials = credentials_of(&[("alice", b"secret")]);
    let config = SaslConfig::default();
    let now = Instant::now();
    for (mechanism, token) in [
        ("PLAIN", plain("alice", "wrong")),
        ("PLAIN", plain("mallory", "secret")),
        ("PLAIN", b"alice\0secret".to_vec()),
    ] {
        let mut connection = Authentication::new(true);
        connection.handshake(1, mechanism, &config);
        let failure = connection
            .authenticate(&token, &config, &credentials, now)
            .err()
            .unwrap();
        assert_eq!(failure.code, 58, "SASL_AUTHENTICATION_FAILED");
        assert!(failure.message.contains("PLAIN"), "{}", failure.message);
        assert!(connection.take_closing().is_some());
        assert!(connection.principal().is_none());
    }
    let mut connection = Authentication::new(true);
    connection.handshake(1, "SCRAM-SHA-256", &config);
    let client = ScramClient::new(ScramMechanism::Sha256, "alice", b"wrong");
    let first = connection
        .authenticate(&client.first(), &config, &credentials, now)
        .unwrap();
    let failure = connection
        .authenticate(
            &client.finish(&first.auth_bytes).0,
            &config,
            &credentials,
            now,
        )
        .err()
        .unwrap();
    assert_eq!(failure.code, 58);
    assert!(
        failure.message.contains("e=invalid-proof"),
        "{}",
        failure.message
    );
    assert!(connection.take_closing().is_some());

    // A mechanism that is not enabled, and tokens without a handshake.
    let only_scram = SaslConfig {
        mechanisms: vec![SaslMechanism::Scram(ScramMechanism::Sha512)],
        reauthentication_max: None,
    };
    let mut connection = Authentication::new(true);
    let refused = connection.handshake(1, "PLAIN", &only_scram);
    assert_eq!(
        refused.error_code,
        ResponseError::UnsupportedSaslMechanism.code()
    );
    assert_eq!(
        refused.mechanisms,
        vec![StrBytes::from_static_str("SCRAM-SHA-512")]
    );
    let mut connection = Authentication::new(true);
    let failure = connection
        .authenticate(&plain("alice", "secret"), &config, &credentials, now)
        .err()
        .unwrap();
    assert_eq!(failure.code, ResponseError::IllegalSaslState.code());
}

#[test]
fn a_session_expires_unless_the_client_reauthenticates_as_itself() {
    let credentials = credentials_of(&[("alice", b"secret"), ("bob", b"hunter2")]);
    let config = SaslConfig {
        mechanisms: DEFAULT_MECHANISMS.to_vec(),
        reauthentication_max: Some(Duration::from_secs(60)),
    };
    let start = Instant::now();
    let mut connection = Authentication::new(true);
    connection.handshake(1, "PLAIN", &config);
    let answer = connection
        .authenticate(&plain("alice", "secret"), &config, &credentials, start)
        .unwrap();
    assert_eq!(answer.session_lifetime_ms, 60_000);
    assert!(connection.admit(ApiKey::Produce, start).is_ok());
    let later = start + Duration::from_secs(61);
    let refused = connection.admit(ApiKey::Produce, later).unwrap_err();
    assert!(refused.contains("expired"), "{refused}");
    assert!(connection.admit(ApiKey::ApiVersions, later).is_err());

    // Re-authentication on the same connection opens a new session.
    assert_eq!(connection.handshake(1, "PLAIN", &config).error_code, 0);
    connection
        .authenticate(&plain("alice", "secret"), &config, &credentials, later)
        .unwrap();
    assert!(connection.admit(ApiKey::Produce, later).is_ok());

    // ... as the same user only, and with the same mechanism.
    let mut switching = connection.clone();
    assert_eq!(switching.handshake(1, "PLAIN", &config).error_code, 0);
    let failure = switching
        .authenticate(&plain("bob", "hunter2"), &config, &credentials, later)
        .err()
        .unwrap();
    assert!(
        failure.message.contains("Cannot change principals"),
        "{}",
        failure.message
    );
    assert!(switching.take_closing().is_some());
    let mut switching = connection.clone();
    let refused = switching.handshake(1, "SCRAM-SHA-256", &config);
    assert_eq!(refused.error_code, ResponseError::IllegalSaslState.code());
}

#[test]
fn handshake_v0_switches_to_raw_tokens_until_authenticated() {
    let credentials = credentials_of(&[("alice", b"secret")]);
    let config = SaslConfig::default();
    let now = Instant::now();
    let mut connection = Authentication::new(true);
    assert!(!connection.expects_raw_token());
    connection.handshake(0, "SCRAM-SHA-512", &config);
    assert!(connection.expects_raw_token());
    let client = ScramClient::new(ScramMechanism::Sha512, "alice", b"secret");
    let first = connection
        .authenticate(&client.first(), &config, &credentials, now)
        .unwrap();
    assert!(connection.expects_raw_token());
    connection
        .authenticate(
            &client.finish(&first.auth_bytes).0,
            &config,
            &credentials,
            now,
        )
        .unwrap();
    assert!(!connection.expects_raw_token());
    assert!(connection.admit(ApiKey::Metadata, now).is_ok());
}
