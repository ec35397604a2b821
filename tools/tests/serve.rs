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

use common::{Broker, Start, DEADLINE};

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

/// True once the server has closed `stream` (a read returns end of file, or a reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    closed_by_server_within(stream, DEADLINE)
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
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("still after waiting"),
        "a bounded wait, then a clear error: {stderr}"
    );
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

/// The sum over shards of `name` in a metrics exposition.
fn metric_sum(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Whether `stream` gets an answer to ApiVersions within `wait` (false: no answer yet; the
/// request stays sent).
fn answered_within(stream: &mut TcpStream, correlation_id: i32, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut length = [0u8; 4];
    let answered = match stream.read_exact(&mut length) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => false,
        Err(error) => panic!("reading an answer: {error}"),
    };
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    if answered {
        let mut body = vec![0u8; i32::from_be_bytes(length) as usize];
        stream.read_exact(&mut body).unwrap();
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, 0).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
    }
    answered
}

/// True if the server closes `stream` within `wait` (false: it is still open).
fn closed_by_server_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the broker sent something unasked"),
        Err(error) => !matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    closed
}

/// Sends ApiVersions on `stream` and checks it is answered.
fn served(stream: &mut TcpStream, correlation_id: i32) {
    stream
        .write_all(&api_versions_request(3, correlation_id))
        .unwrap();
    assert_eq!(api_versions_response(stream, 3).0, correlation_id);
}

/// `count` new connections to `broker`, each served once.
fn served_connections(broker: &Broker, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|index| {
            let mut stream = broker.connect();
            served(&mut stream, index as i32);
            stream
        })
        .collect()
}

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) ends with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: a plain query.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Starts a broker of one shard under a descriptor limit of `LIMIT` with `args`, holds twice as
/// many connections as it has descriptors for a few seconds while a client it served before
/// keeps asking, checks what a user would see (the start-up line names the low limit; the
/// broker stays up, serves that client, spins no core and writes a few lines at most), and
/// returns it once descriptors are free again and new connections are served.
fn under_descriptor_pressure(args: &[&str]) -> Broker {
    const LIMIT: u64 = 128;
    let mut all_args = vec!["--cores", "1", "--offsets-partitions", "1"];
    all_args.extend_from_slice(args);
    let mut broker = Broker::start_with(&Start {
        args: &all_args,
        descriptor_limit: Some(LIMIT),
    });
    assert!(
        broker
            .listening_line
            .contains(&format!("file descriptor limit {LIMIT} is below")),
        "the start-up line names the low limit: {}",
        broker.listening_line
    );
    // The partitions open after the listener; the flood must not take their descriptors.
    let deadline = Instant::now() + DEADLINE;
    while !broker.metrics().contains("ferrite_partition_shard{") {
        assert!(Instant::now() < deadline, "the offsets partition is opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = broker.connect();
    served(&mut client, 1);

    let pressure = Duration::from_secs(3);
    let cpu_before = cpu_time(broker.child.id());
    let started = Instant::now();
    let mut held = Vec::new();
    while held.len() < 2 * LIMIT as usize {
        if let Ok(stream) = TcpStream::connect_timeout(&broker.address, Duration::from_millis(100))
        {
            held.push(stream);
        }
    }
    let mut correlation_id = 2;
    while started.elapsed() < pressure {
        served(&mut client, correlation_id);
        correlation_id += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu_used = cpu_time(broker.child.id()) - cpu_before;
    assert!(
        cpu_used < started.elapsed() / 2,
        "no core spinning: {cpu_used:?} of CPU in {:?}",
        started.elapsed()
    );
    assert!(
        broker.stderr().len() <= 10,
        "stderr stays small: {} lines, the first: {:#?}",
        broker.stderr().len(),
        &broker.stderr()[..broker.stderr().len().min(10)]
    );
    served(&mut client, correlation_id);
    assert!(broker.child.try_wait().unwrap().is_none(), "still running");

    // Descriptors free again: connections that waited in the backlog, and new ones, are served.
    drop(held.split_off(8));
    for (index, waiting) in held.iter_mut().enumerate() {
        served(waiting, 1000 + index as i32);
    }
    served(&mut broker.connect(), 2000);
    broker
}

#[test]
fn more_connections_than_descriptors_wait_by_default_at_max_connections() {
    let broker = under_descriptor_pressure(&[]);
    let metrics = broker.metrics();
    assert!(
        metric_sum(&metrics, "ferrite_connections_delayed_total") > 0,
        "the default max.connections (a quarter of the descriptors) held them back"
    );
    assert_eq!(metric_sum(&metrics, "ferrite_accept_failures_total"), 0);
}

#[test]
fn out_of_descriptors_the_broker_pauses_accepting_and_says_so_once() {
    // A connection limit far above what the descriptors allow, so the descriptors run out.
    let broker = under_descriptor_pressure(&["--max-connections", "100000"]);
    let accept_lines = broker
        .stderr()
        .iter()
        .filter(|line| {
            line.contains("accepting a connection failed: IO error occurred: Too many open files")
        })
        .count();
    assert!(
        (1..=2).contains(&accept_lines),
        "the shortage is said, once per interval: {accept_lines} lines"
    );
    assert!(metric_sum(&broker.metrics(), "ferrite_accept_failures_total") > 0);
}

#[test]
fn bad_frames_from_many_connections_log_a_bounded_number_of_lines_with_a_count() {
    let broker = Broker::start();
    // Longer than the log interval (5 s), so a second line carries the count.
    let flood = Duration::from_secs(6);
    let started = Instant::now();
    let mut connections = 0u64;
    while started.elapsed() < flood {
        let mut bad = broker.connect();
        bad.write_all(&[&8i32.to_be_bytes()[..], &[0xff; 8]].concat())
            .unwrap();
        assert!(closed_by_server(&mut bad));
        connections += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(connections > 500, "a flood: {connections} connections");
    let lines: Vec<String> = broker
        .stderr()
        .into_iter()
        .filter(|line| line.contains("closing the connection from"))
        .collect();
    assert!(
        (1..=3).contains(&lines.len()),
        "{connections} bad connections wrote {} lines: {lines:#?}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("more like this not logged")),
        "the lines left out are counted: {lines:#?}"
    );
    let deadline = Instant::now() + DEADLINE;
    while metric_sum(
        &broker.metrics(),
        "ferrite_connections_closed_bad_input_total",
    ) < connections
    {
        assert!(Instant::now() < deadline, "every bad connection is counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn at_max_connections_new_connections_wait_until_one_closes() {
    let broker = Broker::start_with(&Start {
        args: &["--max-connections", "3"],
        ..Start::default()
    });
    let mut open = served_connections(&broker, 3);
    // The fourth connects (the kernel's backlog) but is not served while three are open.
    let mut fourth = broker.connect();
    fourth.write_all(&api_versions_request(3, 4)).unwrap();
    assert!(
        !answered_within(&mut fourth, 4, Duration::from_millis(500)),
        "a fourth connection is not served at --max-connections 3"
    );
    served(&mut open[0], 10);
    drop(open.remove(0));
    assert!(
        answered_within(&mut fourth, 4, DEADLINE),
        "served once a connection closed"
    );
    served(&mut fourth, 5);
    let metrics = broker.metrics();
    assert_eq!(metric_sum(&metrics, "ferrite_connections_delayed_total"), 1);
    assert_eq!(metric_sum(&metrics, "ferrite_connections_open"), 3);
    assert!(
        broker
            .stderr()
            .iter()
            .any(|line| line.contains("3 client connections are open (--max-connections)")),
        "{:#?}",
        broker.stderr()
    );
}

#[test]
fn over_max_connections_per_ip_a_new_connection_is_closed_and_other_addresses_are_served() {
    let broker = Broker::start_with(&Start {
        args: &["--max-connections-per-ip", "2"],
        ..Start::default()
    });
    let mut two = served_connections(&broker, 2);
    let mut third = broker.connect();
    assert!(
        closed_by_server(&mut third),
        "a third from 127.0.0.1 is closed"
    );
    // Another loopback address has its own count.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    socket.connect(&broker.address.into()).unwrap();
    let mut other: TcpStream = socket.into();
    other.set_read_timeout(Some(DEADLINE)).unwrap();
    served(&mut other, 3);
    drop(two.pop());
    let deadline = Instant::now() + DEADLINE;
    let mut again = loop {
        // The close reaches the broker a moment after ours: until then a new one is refused.
        let mut again = broker.connect();
        if !closed_by_server_within(&mut again, Duration::from_millis(200)) {
            break again;
        }
        assert!(Instant::now() < deadline, "a slot freed by a close");
    };
    served(&mut again, 4);
    assert!(metric_sum(&broker.metrics(), "ferrite_connections_refused_total") >= 1);
    assert!(broker
        .stderr()
        .iter()
        .any(|line| line.contains("refusing the connection from 127.0.0.1")));
}

#[test]
fn a_connection_without_requests_for_connections_max_idle_ms_is_closed() {
    let idle_ms = 600;
    let broker = Broker::start_with(&Start {
        args: &["--connections-max-idle-ms", &idle_ms.to_string()],
        ..Start::default()
    });
    let mut idle = broker.connect();
    served(&mut idle, 1);
    let mut busy = broker.connect();
    let idle_since = Instant::now();
    // The busy one asks every third of the idle time, for three idle times.
    for correlation_id in 0..9 {
        served(&mut busy, correlation_id);
        std::thread::sleep(Duration::from_millis(idle_ms / 3));
    }
    assert!(closed_by_server(&mut idle), "the idle connection is closed");
    assert!(
        idle_since.elapsed() >= Duration::from_millis(idle_ms),
        "not before the idle time"
    );
    served(&mut busy, 100);
    assert_eq!(
        metric_sum(&broker.metrics(), "ferrite_connections_closed_idle_total"),
        1
    );
}
