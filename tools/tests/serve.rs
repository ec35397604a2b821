//! `ferrite serve` as a user runs it: a real process on a free loopback port, spoken to over
//! TCP with the Kafka protocol.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use common::{Broker, DEADLINE};

fn api_versions_request(version: i16, correlation_id: i32) -> Vec<u8> {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("serve-test")))
        .encode(
            &mut body,
            ApiKey::ApiVersions.request_header_version(version),
        )
        .unwrap();
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("serve-test"))
        .with_client_software_version(StrBytes::from_static_str("1"))
        .encode(&mut body, version)
        .unwrap();
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn read_frame(stream: &mut TcpStream) -> Bytes {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut body).unwrap();
    Bytes::from(body)
}

fn api_versions_response(stream: &mut TcpStream, version: i16) -> (i32, ApiVersionsResponse) {
    let mut frame = read_frame(stream);
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    let body = ApiVersionsResponse::decode(&mut frame, version).unwrap();
    assert!(frame.is_empty(), "nothing after the response");
    (header.correlation_id, body)
}

/// True once the server has closed `stream` (a read returns end of file).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

#[test]
fn serve_negotiates_versions_survives_bad_clients_and_stops_cleanly() {
    let mut broker = Broker::start();

    // ApiVersions in every version we speak, pipelined on one connection: answered in order.
    let mut client = broker.connect();
    for version in 0..=3 {
        client
            .write_all(&api_versions_request(version, 100 + i32::from(version)))
            .unwrap();
    }
    for version in 0..=3 {
        let (correlation_id, response) = api_versions_response(&mut client, version);
        assert_eq!(correlation_id, 100 + i32::from(version));
        assert_eq!(response.error_code, 0);
        let advertised = response
            .api_keys
            .iter()
            .find(|key| key.api_key == ApiKey::ApiVersions as i16)
            .expect("ApiVersions is advertised");
        assert_eq!((advertised.min_version, advertised.max_version), (0, 3));
    }

    // A newer ApiVersions than ours: KIP-511's fallback, a v0 answer with UNSUPPORTED_VERSION.
    client.write_all(&api_versions_request(4, 200)).unwrap();
    let (correlation_id, response) = api_versions_response(&mut client, 0);
    assert_eq!((correlation_id, response.error_code), (200, 35));
    assert!(!response.api_keys.is_empty());

    // Bad input closes that connection only: a lying length, an oversize frame, garbage, an
    // API we do not implement, and a connection cut mid-frame.
    let bad_inputs: Vec<Vec<u8>> = vec![
        (-1i32).to_be_bytes().to_vec(),
        (200i32 << 20).to_be_bytes().to_vec(),
        [&8i32.to_be_bytes()[..], &[0xff; 8]].concat(),
        [
            &8i32.to_be_bytes()[..],
            &0i16.to_be_bytes(),
            &9i16.to_be_bytes(),
            &1i32.to_be_bytes(),
        ]
        .concat(),
    ];
    for bad in &bad_inputs {
        let mut bad_client = broker.connect();
        bad_client.write_all(bad).unwrap();
        assert!(closed_by_server(&mut bad_client), "closed after {bad:02x?}");
    }
    let mut cut = broker.connect();
    cut.write_all(&api_versions_request(3, 1)[..10]).unwrap();
    drop(cut);

    // The good connection and new ones still work.
    client.write_all(&api_versions_request(3, 300)).unwrap();
    assert_eq!(api_versions_response(&mut client, 3).0, 300);
    let mut another = broker.connect();
    another.write_all(&api_versions_request(1, 301)).unwrap();
    assert_eq!(api_versions_response(&mut another, 1).0, 301);

    // SIGTERM: stops accepting, shuts down cleanly, exits 0.
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(broker.child.id() as libc::pid_t, libc::SIGTERM) },
        0,
        "SIGTERM delivered"
    );
    broker.wait_for_line("stopped cleanly");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = broker.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the broker did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_taken_address_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args([
            "serve",
            "--listen",
            &taken.local_addr().unwrap().to_string(),
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen on"));
}

#[test]
fn shards_are_pinned_where_cpuset_says_and_a_wrong_cpuset_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .unwrap()
    };
    let output = serve(&["--cpuset", "0", "--cores", "2"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--cpuset names 1 CPUs"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = serve(&["--cpuset", "4096"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cpuset names CPU 4096"));
}
