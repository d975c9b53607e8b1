//! TLS: a private CA, client certificates and a fixed server name, loaded into rustls.

use std::sync::Arc;

use fred::types::config::{TlsConfig, TlsConnector, TlsHostMapping};
use session_core::{Error, Result};

use super::{config_err, RedisConfig};

impl RedisConfig {
    /// fred's TLS settings from `redis.tls.*`.
    pub(super) fn tls_config(&self) -> Result<TlsConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config {
                key: "redis.tls".into(),
                message: format!("cannot set up TLS: {e}"),
                source: Some(Box::new(e)),
            })?;

        let mut roots = rustls::RootCertStore::empty();
        match &self.tls.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        config_err(
                            "redis.tls.ca_file",
                            format!("cannot read PEM certificates from {}: {e}", path.display()),
                        )
                    })?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(config_err(
                        "redis.tls.ca_file",
                        format!("{} holds no usable CA certificate", path.display()),
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(config_err(
                        "redis.tls.ca_file",
                        "no system root certificates were found; set redis.tls.ca_file to the server's CA",
                    ));
                }
            }
        }
        let builder = builder.with_root_certificates(roots);
        let client = match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        config_err(
                            "redis.tls.cert_file",
                            format!("cannot read PEM certificates from {}: {e}", cert.display()),
                        )
                    })?;
                if chain.is_empty() {
                    return Err(config_err(
                        "redis.tls.cert_file",
                        format!("{} holds no certificate", cert.display()),
                    ));
                }
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    config_err(
                        "redis.tls.key_file",
                        format!("cannot read a PEM private key from {}: {e}", key.display()),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| Error::Config {
                        key: "redis.tls.key_file".into(),
                        message: format!("the client certificate and key do not fit together: {e}"),
                        source: Some(Box::new(e)),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        let hostnames = match &self.tls.server_name {
            Some(name) => TlsHostMapping::Custom(Arc::new(FixedServerName(name.clone()))),
            None => TlsHostMapping::None,
        };
        Ok(TlsConfig {
            connector: TlsConnector::from(client),
            hostnames,
        })
    }
}

/// Verifies every node's certificate against one configured name.
#[derive(Debug)]
struct FixedServerName(String);

impl fred::types::config::HostMapping for FixedServerName {
    fn map(&self, _ip: &std::net::IpAddr, _default_host: &str) -> Option<String> {
        Some(self.0.clone())
    }
}
