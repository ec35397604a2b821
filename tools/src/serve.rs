//! `ferrite serve`: starts the shards and their Kafka listeners, and stops them cleanly on
//! SIGINT/SIGTERM.
//!
//! Exit codes: 0 after a clean shutdown; 1 if the broker failed while running; 2 if it could
//! not start (address in use, unwritable data directory, …); 130 on a second signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use engine::shard::{Runtime, RuntimeConfig};
use net::connection::ConnectionConfig;

#[derive(clap::Args)]
pub struct Arguments {
    /// Kafka listener address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Where partitions are stored.
    #[arg(long, default_value = "./ferrite-data")]
    data_dir: PathBuf,
    /// Number of shards (one per core, pinned); all cores by default.
    #[arg(long)]
    cores: Option<usize>,
}

pub fn run(arguments: Arguments) -> ExitCode {
    let cores_available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = arguments.cores.unwrap_or(cores_available);
    if cores == 0 || cores > cores_available {
        eprintln!("ferrite serve: --cores must be between 1 and {cores_available}");
        return ExitCode::from(2);
    }
    if let Err(error) = std::fs::create_dir_all(&arguments.data_dir) {
        eprintln!(
            "ferrite serve: cannot create the data directory {}: {error}",
            arguments.data_dir.display()
        );
        return ExitCode::from(2);
    }
    // Every shard binds with SO_REUSEPORT; check first that nobody else holds the address, so
    // that a taken port is a clear start-up error rather than a shard failing later.
    // Port 0 picks a free port here, which every shard then binds (tests use this).
    let listen =
        match std::net::TcpListener::bind(arguments.listen).and_then(|probe| probe.local_addr()) {
            Ok(bound) => bound,
            Err(error) => {
                eprintln!(
                    "ferrite serve: cannot listen on {}: {error}",
                    arguments.listen
                );
                return ExitCode::from(2);
            }
        };
    raise_memlock_limit();
    let mut config = RuntimeConfig::one_shard_per_cpu(&arguments.data_dir);
    config.shard_count = cores;
    config.cpus = Some((0..cores).collect());
    // Each shard reports once its listener is bound, so "listening" is printed only when
    // every shard accepts connections.
    let (bound, bound_shards) = std::sync::mpsc::channel::<()>();
    let runtime = match Runtime::start(config, move |context| {
        let bound = bound.clone();
        async move {
            let listener = match net::server::bind(listen) {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("ferrite serve: cannot listen on {listen}: {error}");
                    std::process::exit(2);
                }
            };
            let _ = bound.send(());
            net::server::accept_until_shutdown(context, listener, ConnectionConfig::default()).await
        }
    }) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferrite serve: {error}");
            return ExitCode::from(2);
        }
    };
    for _ in 0..cores {
        if bound_shards.recv().is_err() {
            eprintln!("ferrite serve: a shard stopped before it was listening");
            return ExitCode::from(1);
        }
    }
    if let Err(error) = runtime.shutdown_handle().install_signal_handlers() {
        eprintln!("ferrite serve: {error}");
        return ExitCode::from(2);
    }
    println!(
        "ferrite: listening on {listen} (Kafka), data in {}, {cores} shard(s)",
        arguments.data_dir.display()
    );
    match runtime.join() {
        Ok(()) => {
            println!("ferrite: stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ferrite serve: {error}");
            ExitCode::from(1)
        }
    }
}

/// glommio registers 10 MiB of I/O memory per shard when the memlock limit allows; raise the
/// limit if we may (root, or a hard limit above the soft one), else say what it costs and how
/// to raise it. glommio falls back to unregistered buffers either way.
fn raise_memlock_limit() {
    let wanted = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls on a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) } == 0 {
        return;
    }
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) } == 0 {
        current.rlim_cur = current.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &current) };
    }
    eprintln!(
        "ferrite serve: the locked-memory limit stays at {} KiB; glommio uses unregistered \
         buffers where its 10 MiB per shard do not fit (a little slower I/O). To raise it: \
         `ulimit -l unlimited` as root, or LimitMEMLOCK=infinity in a systemd unit.",
        current.rlim_cur / 1024
    );
}
