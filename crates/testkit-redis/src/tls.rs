//! One server on a TLS-only port, with an ACL user and no default user.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::env::{Topology, TLS_CA_ENV, TLS_CLIENT_CERT_ENV, TLS_CLIENT_KEY_ENV, TLS_URL_ENV, TOPOLOGY_ENV};
use crate::options::{TlsFiles, TopologyOptions};
use crate::process::output_with_timeout;
use crate::scratch::Scratch;
use crate::server::{stop_all, RedisServer};
use crate::topology::RedisTopology;

/// How long one `openssl` call may take.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(30);
/// Validity of generated certificates, long enough for `cargo xtask redis up`.
const CERT_DAYS: &str = "30";

/// A `redis-server` that serves TLS only (`--port 0 --tls-port P`), with
/// certificates made at run time by the `openssl` CLI, and ACLs:
///
/// - `user default off …`: an unauthenticated client gets `NOAUTH`;
/// - `user app on >PASSWORD ~* &* +@all -@dangerous +info +role +client|kill`: every key,
///   every command a session store needs (GET, SET, GETDEL, PEXPIREAT, PTTL,
///   EXISTS, EVAL, EVALSHA, SCRIPT, SCAN, INFO, MEMORY, PING, …) and none of
///   KEYS, FLUSHALL, FLUSHDB, CONFIG or DEBUG, as on managed Redis.
///
/// The password is random per start. Client certificates are required only
/// with [`TopologyOptions::mutual_tls`].
pub struct Tls {
    server: RedisServer,
    certs: TlsCerts,
    password: String,
    mutual: bool,
    ready_after: Duration,
    root: Scratch,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("port", &self.server.port())
            .field("user", &Self::USER)
            .field("certs", &self.certs)
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The ACL user that tests connect as.
    pub const USER: &'static str = "app";

    /// Starts it with the default [`TopologyOptions`] (no client certificates).
    ///
    /// # Errors
    ///
    /// When `openssl` fails or the server does not start.
    pub fn start() -> io::Result<Self> {
        Self::start_with(&TopologyOptions::new())
    }

    /// Starts it with `options`.
    ///
    /// # Errors
    ///
    /// As [`Self::start`].
    pub fn start_with(options: &TopologyOptions) -> io::Result<Self> {
        let began = Instant::now();
        let root = Scratch::new(options.base_dir.as_deref(), "tls")?;
        let certs = TlsCerts::generate(&root.path().join("certs"))?;
        let password = random_hex(16)?;
        let files = TlsFiles {
            ca_cert: certs.ca_cert.clone(),
            server_cert: certs.server_cert.clone(),
            server_key: certs.server_key.clone(),
            client: options
                .mutual_tls
                .then(|| (certs.client_cert.clone(), certs.client_key.clone())),
            auth_clients: options.mutual_tls,
        };
        let server = RedisServer::start_with(
            options
                .node(&root, "server")
                .tls(files)
                .auth(Self::USER, password.clone())
                .config_line("user default off resetpass resetkeys resetchannels -@all")
                .config_line(format!(
                    "user {} on >{password} ~* &* +@all -@dangerous +info +role +client|kill",
                    Self::USER
                )),
        )?;
        Ok(Self {
            server,
            certs,
            password,
            mutual: options.mutual_tls,
            ready_after: began.elapsed(),
            root,
        })
    }

    /// The server.
    pub fn server(&self) -> &RedisServer {
        &self.server
    }

    /// The server, for fault injection.
    pub fn server_mut(&mut self) -> &mut RedisServer {
        &mut self.server
    }

    /// `rediss://app:PASSWORD@127.0.0.1:P`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The password of [`Self::USER`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The generated certificates (CA, server, client).
    pub fn certs(&self) -> &TlsCerts {
        &self.certs
    }
}

impl RedisTopology for Tls {
    fn topology(&self) -> Topology {
        Topology::Tls
    }

    fn env(&self) -> BTreeMap<&'static str, String> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut env = BTreeMap::from([
            (TOPOLOGY_ENV, Topology::Tls.name().to_owned()),
            (TLS_URL_ENV, self.url()),
            (TLS_CA_ENV, path(&self.certs.ca_cert)),
        ]);
        if self.mutual {
            env.insert(TLS_CLIENT_CERT_ENV, path(&self.certs.client_cert));
            env.insert(TLS_CLIENT_KEY_ENV, path(&self.certs.client_key));
        }
        env
    }

    fn servers(&self) -> Vec<&RedisServer> {
        vec![&self.server]
    }

    fn servers_mut(&mut self) -> Vec<&mut RedisServer> {
        vec![&mut self.server]
    }

    fn ready_after(&self) -> Duration {
        self.ready_after
    }

    fn detach(&mut self) {
        self.server.detach();
        self.root.keep();
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        stop_all(self.servers_mut());
    }
}

/// PEM files made by [`TlsCerts::generate`]: a CA, a server certificate for
/// `127.0.0.1` and `localhost` (subject alternative names), and a client
/// certificate, both signed by the CA. Keys are ECDSA P-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCerts {
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// The CA key (to sign more certificates).
    pub ca_key: PathBuf,
    /// The server certificate (`CN=localhost`, SAN `IP:127.0.0.1`, `DNS:localhost`).
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// A client certificate (`CN=app`, extended key usage clientAuth).
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
}

impl TlsCerts {
    /// Generates a fresh CA, server and client certificate in `dir` (created
    /// if missing) with the `openssl` CLI. A second call with another `dir`
    /// gives an unrelated CA, e.g. for wrong-CA tests.
    ///
    /// # Errors
    ///
    /// When `openssl` is missing or fails.
    pub fn generate(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let file = |name: &str| dir.join(name);
        let certs = TlsCerts {
            ca_cert: file("ca.crt"),
            ca_key: file("ca.key"),
            server_cert: file("server.crt"),
            server_key: file("server.key"),
            client_cert: file("client.crt"),
            client_key: file("client.key"),
        };
        fs::write(
            file("ca.cnf"),
            "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n\
             [dn]\nCN = testkit-redis test CA\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
        )?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-days",
            CERT_DAYS,
            "-config",
            &p(&file("ca.cnf")),
            "-keyout",
            &p(&certs.ca_key),
            "-out",
            &p(&certs.ca_cert),
        ])?;
        for (name, cn, usage, san) in [
            (
                "server",
                "localhost",
                "serverAuth",
                "\nsubjectAltName = IP:127.0.0.1,DNS:localhost",
            ),
            ("client", "app", "clientAuth", ""),
        ] {
            let (key, csr, cert, ext) = (
                file(&format!("{name}.key")),
                file(&format!("{name}.csr")),
                file(&format!("{name}.crt")),
                file(&format!("{name}.ext")),
            );
            fs::write(
                &ext,
                format!(
                    "basicConstraints = critical,CA:FALSE\n\
                     keyUsage = critical,digitalSignature,keyEncipherment\n\
                     extendedKeyUsage = {usage}\nsubjectKeyIdentifier = hash\n\
                     authorityKeyIdentifier = keyid,issuer{san}\n"
                ),
            )?;
            openssl(&[
                "req",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-config",
                &p(&file("ca.cnf")),
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &p(&key),
                "-out",
                &p(&csr),
            ])?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &p(&csr),
                "-CA",
                &p(&certs.ca_cert),
                "-CAkey",
                &p(&certs.ca_key),
                "-CAcreateserial",
                "-days",
                CERT_DAYS,
                "-extfile",
                &p(&ext),
                "-out",
                &p(&cert),
            ])?;
        }
        Ok(certs)
    }
}

fn openssl(args: &[&str]) -> io::Result<()> {
    let mut command = Command::new("openssl");
    command.args(args);
    let output = output_with_timeout(&mut command, OPENSSL_TIMEOUT).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run openssl ({e}); install it with `apt-get install -y openssl`"),
        )
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl {} failed ({}): {}",
            args.first().copied().unwrap_or_default(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `bytes` random bytes from the OS, hex-encoded.
fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
