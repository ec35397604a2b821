//! The settings' tests: flags over the file over the defaults, and every refusal named.

use super::*;

#[test]
fn a_cluster_is_named_by_node_id_and_peers_and_checked() {
    let cluster = |node_id: Option<u64>, peers: Option<&str>, factor: Option<u16>| {
        Arguments {
            node_id,
            peers: peers.map(str::to_owned),
            default_replication_factor: factor,
            ..Arguments::default()
        }
        .resolve()
        .map(|settings| settings.cluster)
    };
    let three = "1@127.0.0.1:9192, 2@127.0.0.1:9193,3@127.0.0.1:9194";
    let settings = cluster(Some(2), Some(three), None).unwrap().unwrap();
    assert_eq!(settings.node_id, 2);
    assert_eq!(settings.peers.len(), 3);
    assert_eq!(
        settings.rpc_listen,
        "127.0.0.1:9193".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(settings.default_replication_factor, 3);
    let alone = cluster(Some(1), Some("1@127.0.0.1:9192"), None)
        .unwrap()
        .unwrap();
    assert_eq!(alone.default_replication_factor, 1);
    assert!(
        cluster(None, None, None).unwrap().is_none(),
        "a broker alone"
    );
    for (node_id, peers, factor, wanted) in [
        (Some(1), None, None, "needs --peers"),
        (None, Some(three), None, "needs --node-id"),
        (Some(4), Some(three), None, "does not name this broker"),
        (Some(1), Some("1@127.0.0.1:1,1@127.0.0.1:2"), None, "twice"),
        (
            Some(1),
            Some("1:127.0.0.1:1"),
            None,
            "expected ID@HOST:PORT",
        ),
        (Some(1), Some("0@127.0.0.1:1"), None, "not a node id"),
        (Some(1), Some("1@nowhere"), None, "not HOST:PORT"),
        (Some(1), Some(three), Some(4), "between 1 and 3"),
        (Some(1), Some(FIVE), Some(6), "between 1 and 5"),
    ] {
        let error = cluster(node_id, peers, factor).unwrap_err();
        assert!(error.contains(wanted), "{error} (wanted {wanted:?})");
    }
}

const FIVE: &str = "1@127.0.0.1:1,2@127.0.0.1:2,3@127.0.0.1:3,4@127.0.0.1:4,5@127.0.0.1:5";

#[test]
fn a_cluster_of_five_has_three_controller_voters_unless_told_and_any_replication_factor() {
    let cluster = |voters: Option<usize>, factor: Option<u16>| {
        Arguments {
            node_id: Some(4),
            peers: Some(FIVE.to_owned()),
            controller_voters: voters,
            default_replication_factor: factor,
            ..Arguments::default()
        }
        .resolve()
        .map(|settings| settings.cluster.expect("a cluster"))
    };
    let settings = cluster(None, None).unwrap();
    assert_eq!(settings.peers.len(), 5);
    assert_eq!(settings.controller_voters, VOTERS_DEFAULT_COUNT);
    assert_eq!(settings.default_replication_factor, 3);
    assert_eq!(
        settings.leader_imbalance_check_interval,
        Some(Duration::from_secs(300)),
        "Kafka's default"
    );
    let settings = cluster(Some(5), Some(5)).unwrap();
    assert_eq!(settings.controller_voters, 5);
    assert_eq!(settings.default_replication_factor, 5);
    assert_eq!(cluster(Some(1), None).unwrap().controller_voters, 1);
    for voters in [0, 6] {
        let error = cluster(Some(voters), None).unwrap_err();
        assert!(
            error.contains("--controller-voters must be between 1 and 5"),
            "{error}"
        );
    }
    let two = Arguments {
        node_id: Some(1),
        peers: Some("1@127.0.0.1:1,2@127.0.0.1:2".to_owned()),
        ..Arguments::default()
    };
    let two = two.resolve().unwrap().cluster.unwrap();
    assert_eq!(two.controller_voters, 2, "every broker when fewer than 3");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        format!(
            "node-id = 5\npeers = \"{FIVE}\"\ncontroller-voters = 1\n\
             leader-imbalance-check-interval-s = 0\n"
        ),
    )
    .unwrap();
    let from_file = Arguments {
        config: Some(file),
        ..Arguments::default()
    };
    let from_file = from_file.resolve().unwrap().cluster.unwrap();
    assert_eq!(from_file.controller_voters, 1);
    assert_eq!(from_file.leader_imbalance_check_interval, None, "0: never");
}

#[test]
fn flags_win_over_the_file_which_wins_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\ndefault-partitions = 4\nauto-create-topics = false\n",
    )
    .unwrap();
    let arguments = Arguments {
        config: Some(file.clone()),
        default_partitions: Some(6),
        ..Arguments::default()
    };
    let settings = arguments.resolve().unwrap();
    assert_eq!(
        settings.listeners,
        parse_endpoints("PLAINTEXT://127.0.0.1:9000").unwrap()
    );
    assert_eq!(settings.default_partitions, 6, "the flag wins");
    assert!(!settings.auto_create_topics, "from the file");
    assert_eq!(
        settings.data_dir,
        PathBuf::from("./ferrite-data"),
        "default"
    );

    std::fs::write(&file, "listen = 5\n").unwrap();
    let error = Arguments {
        config: Some(file.clone()),
        ..Arguments::default()
    }
    .resolve()
    .unwrap_err();
    assert!(error.contains("ferrite.toml"), "{error}");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let error = Arguments {
        config: Some(file),
        ..Arguments::default()
    }
    .resolve()
    .unwrap_err();
    assert!(error.contains("lisen"), "a typo is named: {error}");
}

#[test]
fn retention_flags_set_the_topics_defaults() {
    let settings = Arguments {
        retention_ms: Some(-1),
        retention_bytes: Some(1 << 30),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(settings.log.retention_age_ms_max, None);
    assert_eq!(settings.log.retention_bytes_max, Some(1 << 30));
    let error = Arguments {
        retention_ms: Some(-2),
        ..Arguments::default()
    }
    .resolve()
    .unwrap_err();
    assert!(error.contains("--retention-ms must be -1"), "{error}");
}

#[test]
fn topic_defaults_set_any_topic_setting_and_are_checked_as_topic_settings_are() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(&file, "topic-default = [\"segment.ms=600000\"]\n").unwrap();
    let settings = Arguments {
        topic_default: vec![
            "cleanup.policy=compact,delete".into(),
            "delete.retention.ms=3600000".into(),
        ],
        config: Some(file.clone()),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert!(settings.log.cleanup_policy.compacts() && settings.log.cleanup_policy.deletes());
    assert_eq!(settings.log.delete_retention_ms, 3_600_000);
    assert_eq!(
        settings.log.segment_age_ms_max,
        LogConfig::default().segment_age_ms_max,
        "the flags replace the file's list"
    );
    let from_file = Arguments {
        config: Some(file),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(from_file.log.segment_age_ms_max, Some(600_000));
    for (given, wanted) in [
        ("retention.ms", "expected KEY=VALUE"),
        ("min.cleanable.dirty.ratio=2", "min.cleanable.dirty.ratio"),
        ("no.such.key=1", "no.such.key"),
    ] {
        let error = Arguments {
            topic_default: vec![given.into()],
            ..Arguments::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains(wanted), "{given}: {error}");
    }
}

#[test]
fn the_cleaner_interval_is_set_in_milliseconds_and_never_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(&file, "log-cleaner-interval-ms = 250\n").unwrap();
    let settings = Arguments {
        config: Some(file),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        settings.cleaner_check_interval,
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        Arguments::default()
            .resolve()
            .unwrap()
            .cleaner_check_interval,
        None,
        "the runtime's default"
    );
    let error = Arguments {
        log_cleaner_interval_ms: Some(0),
        ..Arguments::default()
    }
    .resolve()
    .unwrap_err();
    assert!(error.contains("--log-cleaner-interval-ms"), "{error}");
}

#[test]
fn resource_bounds_are_the_brokers_and_shared_out_among_its_shards() {
    let defaults = Arguments::default().resolve().unwrap();
    assert_eq!(
        defaults.resources.per_shard(2).unwrap(),
        ResourceLimits::default(),
        "the engine's defaults are one shard's share of a two-shard broker"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        "open-files-max = 1000\nsegment-fallocation-step = 8388608\n\
         preallocated-bytes-max = 4194304\n",
    )
    .unwrap();
    let settings = Arguments {
        config: Some(file),
        tail_cache_bytes_max: Some(1 << 20),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(settings.log.preallocate_bytes, 8 << 20);
    assert_eq!(
        settings.resources.per_shard(4).unwrap(),
        ResourceLimits {
            open_files_max: 250,
            preallocated_bytes_max: 1 << 20,
            tail_cache_bytes_max: 256 << 10,
        }
    );
    let too_few = BrokerResources {
        open_files_max: OPEN_FILES_MIN * 2 - 1,
        ..BrokerResources::default()
    };
    let error = too_few.per_shard(2).unwrap_err();
    assert!(
        error.contains("--open-files-max must be at least"),
        "{error}"
    );
}

#[test]
fn connection_limits_come_from_flags_or_the_file_with_kafkas_defaults() {
    let defaults = Arguments::default().resolve().unwrap();
    assert_eq!(defaults.connections_max, None, "from the descriptor limit");
    assert_eq!(defaults.connections_per_ip_max, None, "unlimited, as Kafka");
    assert_eq!(defaults.connection_idle_max, Some(Duration::from_secs(600)));
    assert!(defaults.connection_handover, "on unless turned off");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        "max-connections = 1000\nmax-connections-per-ip = 10\nconnections-max-idle-ms = -1\n\
         connection-handover = false\n",
    )
    .unwrap();
    let settings = Arguments {
        config: Some(file),
        max_connections_per_ip: Some(20),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(settings.connections_max, Some(1000));
    assert_eq!(settings.connections_per_ip_max, Some(20), "the flag wins");
    assert_eq!(settings.connection_idle_max, None, "-1: never");
    assert!(!settings.connection_handover, "turned off in the file");

    for (arguments, wanted) in [
        (
            Arguments {
                max_connections: Some(0),
                ..Arguments::default()
            },
            "--max-connections",
        ),
        (
            Arguments {
                max_connections_per_ip: Some(0),
                ..Arguments::default()
            },
            "--max-connections-per-ip",
        ),
        (
            Arguments {
                connections_max_idle_ms: Some(0),
                ..Arguments::default()
            },
            "--connections-max-idle-ms",
        ),
    ] {
        let error = arguments.resolve().unwrap_err();
        assert!(error.contains(wanted), "{error}");
    }
}

#[test]
fn advertised_addresses_are_host_and_port() {
    assert_eq!(
        parse_advertised("broker.example:9093"),
        Ok(("broker.example".into(), 9093))
    );
    assert_eq!(parse_advertised("[::1]:9092"), Ok(("::1".into(), 9092)));
    assert!(parse_advertised("nohost").is_err());
    assert!(parse_advertised("h:0").is_err());
    assert!(parse_advertised("h:99999").is_err());
}

#[test]
fn transaction_settings_come_from_flags_or_the_file_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        "transaction-state-partitions = 8\ntransaction-max-timeout-ms = 60000\n\
         transaction-partition-verification-enable = false\n",
    )
    .unwrap();
    let settings = Arguments {
        config: Some(file),
        transaction_timeout_check_interval_ms: Some(250),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(settings.transactions.state_partitions, 8);
    assert_eq!(settings.transactions.coordinator.timeout_max_ms, 60_000);
    assert_eq!(settings.transactions.coordinator.check_interval_ms, 250);
    assert!(!settings.transactions.partition_verification);
    let defaults = Arguments::default().resolve().unwrap().transactions;
    assert_eq!(defaults, net::transactions::TransactionsConfig::default());
    assert_eq!(defaults.coordinator.timeout_max_ms, 900_000, "Kafka's");
    assert!(defaults.partition_verification, "Kafka's default");
    for (arguments, flag) in [
        (
            Arguments {
                transaction_state_partitions: Some(0),
                ..Arguments::default()
            },
            "--transaction-state-partitions",
        ),
        (
            Arguments {
                transaction_max_timeout_ms: Some(0),
                ..Arguments::default()
            },
            "--transaction-max-timeout-ms",
        ),
        (
            Arguments {
                transaction_timeout_check_interval_ms: Some(-1),
                ..Arguments::default()
            },
            "--transaction-timeout-check-interval-ms",
        ),
    ] {
        let error = arguments.resolve().unwrap_err();
        assert!(error.contains(flag), "{error}");
    }
}

#[test]
fn listeners_come_from_the_flags_or_the_file_and_advertise_only_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        "listeners = \"PLAINTEXT://127.0.0.1:9092,SSL://:9093\"\n\
         advertised-listeners = \"SSL://broker.example:19093\"\n\
         tls-cert = \"server.pem\"\ntls-key = \"server.key\"\ntls-ca = \"ca.pem\"\n\
         tls-client-auth = \"required\"\n",
    )
    .unwrap();
    let from_file = Arguments {
        config: Some(file.clone()),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        from_file.listeners,
        parse_endpoints("PLAINTEXT://127.0.0.1:9092,SSL://:9093").unwrap()
    );
    assert_eq!(
        from_file.advertised,
        parse_endpoints("SSL://broker.example:19093").unwrap()
    );
    assert_eq!(
        from_file.tls,
        Some(TlsFiles {
            certificate: "server.pem".into(),
            key: "server.key".into(),
            client_ca: Some("ca.pem".into()),
            client_auth: ClientAuth::Required,
        })
    );
    let shorthand = Arguments {
        config: Some(file),
        listen: Some("127.0.0.1:9000".parse().unwrap()),
        ..Arguments::default()
    }
    .resolve();
    assert!(
        shorthand.is_err_and(|error| error.contains("SSL://broker.example:19093")),
        "the file's advertised SSL listener is not one of --listen's"
    );
    let defaults = Arguments::default().resolve().unwrap();
    assert_eq!(
        defaults.listeners,
        parse_endpoints("PLAINTEXT://127.0.0.1:9092").unwrap()
    );
    assert!(defaults.advertised.is_empty());
    for (arguments, wanted) in [
        (
            Arguments {
                listeners: Some("PLAINTEXT://:1".into()),
                advertise: Some("h:2".into()),
                advertised_listeners: Some("PLAINTEXT://h:2".into()),
                ..Arguments::default()
            },
            "--advertise and --advertised-listeners",
        ),
        (
            Arguments {
                listeners: Some("PLAINTEXT://:1,SSL://:2".into()),
                ..Arguments::default()
            },
            "uses TLS: give its certificate and key",
        ),
        (
            Arguments {
                tls_cert: Some("server.pem".into()),
                ..Arguments::default()
            },
            "--listeners names none",
        ),
        (
            Arguments {
                listeners: Some("SSL://:2".into()),
                tls_cert: Some("server.pem".into()),
                tls_key: Some("server.key".into()),
                tls_client_auth: Some("always".into()),
                ..Arguments::default()
            },
            "--tls-client-auth 'always'",
        ),
        (
            Arguments {
                listeners: Some("TLS://:1".into()),
                ..Arguments::default()
            },
            "must be a security protocol",
        ),
        (
            Arguments {
                listeners: Some("PLAINTEXT://:1".into()),
                advertised_listeners: Some("PLAINTEXT://:2".into()),
                ..Arguments::default()
            },
            "clients need a host and a port",
        ),
    ] {
        let error = arguments.resolve().unwrap_err();
        assert!(error.contains(wanted), "{error}");
    }
}

#[test]
fn sasl_settings_come_from_flags_or_the_file() {
    use net::sasl::{SaslMechanism, DEFAULT_MECHANISMS};
    let defaults = Arguments::default().resolve().unwrap();
    assert_eq!(defaults.sasl.mechanisms, DEFAULT_MECHANISMS.to_vec());
    assert_eq!(
        defaults.sasl.reauthentication_max, None,
        "0: Kafka's default"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        "sasl-mechanisms = [\"PLAIN\"]\nconnections-max-reauth-ms = 60000\n",
    )
    .unwrap();
    let settings = Arguments {
        config: Some(file.clone()),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(settings.sasl.mechanisms, vec![SaslMechanism::Plain]);
    assert_eq!(
        settings.sasl.reauthentication_max,
        Some(Duration::from_secs(60))
    );
    let settings = Arguments {
        config: Some(file),
        sasl_mechanisms: vec!["SCRAM-SHA-512".into()],
        connections_max_reauth_ms: Some(0),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        settings.sasl.mechanisms,
        vec![SaslMechanism::Scram(
            engine::credentials::ScramMechanism::Sha512
        )],
        "the flag wins"
    );
    assert_eq!(settings.sasl.reauthentication_max, None);

    let error = Arguments {
        sasl_mechanisms: vec!["GSSAPI".into()],
        ..Arguments::default()
    }
    .resolve()
    .unwrap_err();
    assert!(error.contains("--sasl-mechanisms"), "{error}");
}

#[test]
fn the_cluster_secret_comes_from_a_file_named_by_flag_or_config_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef0123\n").unwrap();
    let peers = "1@127.0.0.1:9192,2@127.0.0.1:9193";
    let resolve = |flag: Option<PathBuf>, config: Option<PathBuf>| {
        Arguments {
            node_id: Some(1),
            peers: Some(peers.to_string()),
            cluster_secret_file: flag,
            config,
            ..Arguments::default()
        }
        .resolve()
        .map(|settings| settings.cluster.unwrap().secret)
    };
    let expected = ClusterSecret::new(b"0123456789abcdef0123456789abcdef0123");
    assert_eq!(
        resolve(Some(secret.clone()), None).unwrap(),
        Some(expected.clone())
    );
    assert_eq!(resolve(None, None).unwrap(), None);

    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        format!("cluster-secret-file = \"{}\"\n", secret.display()),
    )
    .unwrap();
    assert_eq!(resolve(None, Some(file)).unwrap(), Some(expected));

    let short = dir.path().join("short.secret");
    std::fs::write(&short, "too short\n").unwrap();
    let error = resolve(Some(short), None).unwrap_err();
    assert!(error.contains("--cluster-secret-file"), "{error}");
    let error = resolve(Some(dir.path().join("missing")), None).unwrap_err();
    assert!(error.contains("cannot read"), "{error}");
}

#[test]
fn the_authorizer_from_flags_and_file() {
    use net::authorizer::AuthorizerConfig;
    let defaults = Arguments::default().resolve().unwrap();
    assert_eq!(
        defaults.authorizer,
        AuthorizerConfig::default(),
        "off: allow all"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrite.toml");
    std::fs::write(
        &file,
        "authorizer = \"acl\"\nsuper-users = \"User:admin,User:ops\"\nallow-everyone-if-no-acl-found = true\n",
    )
    .unwrap();
    let settings = Arguments {
        config: Some(file.clone()),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        settings.authorizer,
        AuthorizerConfig {
            enabled: true,
            super_users: vec!["User:admin".into(), "User:ops".into()],
            allow_everyone_if_no_acl_found: true,
        }
    );
    let settings = Arguments {
        config: Some(file),
        super_users: Some("User:root".into()),
        allow_everyone_if_no_acl_found: Some(false),
        ..Arguments::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        settings.authorizer.super_users,
        vec!["User:root".to_owned()]
    );
    assert!(
        !settings.authorizer.allow_everyone_if_no_acl_found,
        "the flag wins"
    );

    for (authorizer, super_users, expected) in [
        (Some("ranger"), None, "--authorizer"),
        (Some("acl"), Some("admin"), "--super-users"),
        (None, Some("User:admin"), "--authorizer acl"),
    ] {
        let error = Arguments {
            authorizer: authorizer.map(str::to_owned),
            super_users: super_users.map(str::to_owned),
            ..Arguments::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains(expected), "{error}");
    }
}
