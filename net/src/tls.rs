//! TLS for the SSL and SASL_SSL listeners, with rustls: the server's certificate chain and key,
//! optionally the CA that client certificates must chain to (mutual TLS), loaded from PEM files
//! at start-up and again on SIGHUP ([`TlsServer::reload`]): a new handshake uses the
//! configuration current when it starts, a connection keeps the one it was made with, and a
//! reload that fails keeps the old configuration and says why.
//!
//! A client that presented a certificate acts as `User:` and the certificate's subject as
//! Kafka's default principal builder renders it (Java's `X500Principal.getName()`, RFC 2253:
//! the last RDN first, `CN=client,OU=eng,O=example,C=GB`), see [`principal_of`].
//!
//! Encryption happens in userspace, so a TLS connection's file ranges are read into memory and
//! written through rustls instead of spliced (`connection`); the kernel's TLS (kTLS) would keep
//! the splice, but is not attempted (the machines this was built on have no `CONFIG_TLS`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_rustls::TlsAcceptor;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Whether clients must present a certificate (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; a client without one is served as `User:ANONYMOUS`, one with
    /// a certificate the CA did not sign is refused.
    Requested,
    /// A client without a certificate the CA signed is refused.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<ClientAuth, String> {
        match text {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!(
                "'{other}' is not a client authentication: none, requested or required"
            )),
        }
    }
}

/// Where the TLS configuration comes from (read again on every reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate, then the chain up to (not necessarily including) its CA.
    pub certificate: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CA certificates client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Why a TLS configuration cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{0}: no certificate in it")]
    NoCertificate(PathBuf),
    #[error("--tls-client-auth {0:?} needs --tls-ca, the CA client certificates must chain to")]
    NoClientCa(ClientAuth),
    #[error("the client CA: {0}")]
    ClientCa(String),
    #[error("the certificate and key: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS configuration every shard's TLS listeners accept with; shared by the shards (its
/// configuration is swapped whole on a reload, a load costs no lock).
#[derive(Debug)]
pub struct TlsServer {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
}

impl TlsServer {
    /// Loads `files`.
    pub fn load(files: TlsFiles) -> Result<TlsServer, TlsError> {
        let config = server_config(&files)?;
        Ok(TlsServer {
            files,
            config: ArcSwap::from_pointee(config),
        })
    }

    /// Reads the files again; on success new handshakes use them, on failure the configuration
    /// in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// What a new connection's handshake is made with: the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Read {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certificates)
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.certificate)?;
    let key =
        PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|error| TlsError::Read {
            path: files.key.clone(),
            message: error.to_string(),
        })?;
    // ring, whose key exchanges are not post-quantum (rustls deprecates it for that): its
    // alternative, aws-lc-rs, needs cmake and a longer build on every CI run.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (wanted, None) => return Err(TlsError::NoClientCa(wanted)),
        (wanted, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(ca)? {
                roots
                    .add(certificate)
                    .map_err(|error| TlsError::ClientCa(error.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match wanted {
                ClientAuth::Requested => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|error| TlsError::ClientCa(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(chain, key)?)
}

/// The principal of a client that presented `certificate` (DER): `User:` and its subject as
/// Kafka's default principal builder (Java's RFC 2253 rendering) writes it; `None` if it cannot
/// be parsed (rustls verified it, so only an oddity of the parser).
pub fn principal_of(certificate: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let rdns: Vec<String> = parsed
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type().to_id_string();
                    let value = match attribute.as_str() {
                        Ok(text) => escape_rfc2253(text),
                        Err(_) => format!("#{}", hex(attribute.attr_value().data)),
                    };
                    format!("{}={value}", short_name(&oid).unwrap_or(&oid))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    let subject: Vec<&str> = rdns.iter().rev().map(String::as_str).collect();
    Some(format!("User:{}", subject.join(",")))
}

/// The keywords RFC 2253 (and Java) write instead of the attribute's OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn escape_rfc2253(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (position, character) in value.chars().enumerate() {
        let special = matches!(character, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (position == 0 && matches!(character, '#' | ' '))
            || (position == last && character == ' ');
        if special {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_authentication_is_named_as_kafka_names_it() {
        assert_eq!("none".parse(), Ok(ClientAuth::None));
        assert_eq!("requested".parse(), Ok(ClientAuth::Requested));
        assert_eq!("required".parse(), Ok(ClientAuth::Required));
        assert!("REQUIRED".parse::<ClientAuth>().is_err());
    }

    #[test]
    fn values_are_escaped_as_rfc_2253_says() {
        assert_eq!(escape_rfc2253("plain"), "plain");
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253("#x "), "\\#x\\ ");
    }

    #[test]
    fn a_certificate_subject_is_the_principal_kafka_would_name() {
        // Made with `openssl req -x509 ... -subj "/C=GB/O=Example, Ltd./OU=eng/CN=client"`,
        // which `openssl x509 -nameopt RFC2253` shows as below, as Java's X500Principal does.
        let pem = include_bytes!("../testdata/tls/client.pem");
        let certificate = CertificateDer::from_pem_slice(pem).unwrap();
        assert_eq!(
            principal_of(&certificate).as_deref(),
            Some("User:CN=client,OU=eng,O=Example\\, Ltd.,C=GB")
        );
        assert_eq!(principal_of(b"not a certificate"), None);
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = TlsServer::load(TlsFiles {
            certificate: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
            client_auth: ClientAuth::None,
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/cert.pem"),
            "{error}"
        );
    }
}
