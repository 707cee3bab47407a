//! HTTPS (`webrtcEncryption: yes`): rustls with the ring provider (the WebRTC stack's), the
//! certificate read from PEM files and read again when they change (looked at, at most once a
//! second, when a client connects), so a renewed certificate needs no restart. With neither
//! file there, a self-signed certificate is made for this host's names and addresses and kept
//! in those files, so browsers that accepted it once keep accepting it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// How often, at most, the files are looked at for a change.
const RECHECK: Duration = Duration::from_secs(1);

/// The key and certificate files (`webrtcServerKey`, `webrtcServerCert`).
#[derive(Clone, Debug)]
pub(crate) struct CertFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// What identifies a version of the files: modification time and size of each.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(files: &CertFiles) -> Stamp {
    let of = |path: &Path| {
        fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [of(&files.key), of(&files.cert)]
}

/// `AB:CD:...`, the SHA-256 of the certificate, as browsers show it.
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    crate::auth::sha256(cert.as_ref())
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn load(files: &CertFiles) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificate {}", files.cert.display()))?;
    if certs.is_empty() {
        bail!("{}: no PEM certificate in it", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read the private key {}", files.key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("{}: unsupported private key", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().with_context(|| {
        format!(
            "the key {} does not belong to the certificate {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Writes a new self-signed certificate for `names` (host names and IP addresses) to `files`;
/// the key readable by its owner only.
fn make_self_signed(files: &CertFiles, names: Vec<String>) -> anyhow::Result<()> {
    let made = rcgen::generate_simple_self_signed(names.clone())
        .context("cannot make a self-signed certificate")?;
    let write = |path: &Path, mode: u32, text: &str| -> anyhow::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write(&files.key, 0o600, &made.signing_key.serialize_pem())?;
    write(&files.cert, 0o644, &made.cert.pem())?;
    info!(
        cert = %files.cert.display(),
        key = %files.key.display(),
        fingerprint = %fingerprint(made.cert.der()),
        ?names,
        "made a self-signed HTTPS certificate; browsers will ask to trust it once"
    );
    Ok(())
}

/// The certificate in use, and when its files were last looked at.
#[derive(Debug)]
struct Current {
    stamp: Stamp,
    certified: Arc<CertifiedKey>,
    checked: Instant,
}

#[derive(Debug)]
struct ReloadingCert {
    files: CertFiles,
    current: Mutex<Current>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.checked.elapsed() >= RECHECK {
            current.checked = Instant::now();
            let now = stamp(&self.files);
            if now != current.stamp {
                // Taken even if loading fails: a half-written pair is tried again once the
                // files change again, not on every connection.
                current.stamp = now;
                match load(&self.files) {
                    Ok(certified) => {
                        info!(
                            cert = %self.files.cert.display(),
                            fingerprint = %fingerprint(&certified.cert[0]),
                            "HTTPS certificate changed on disk: using the new one"
                        );
                        current.certified = certified;
                    }
                    Err(err) => warn!(
                        "{err:#}; keeping the certificate in use until the files change again"
                    ),
                }
            }
        }
        Some(Arc::clone(&current.certified))
    }
}

/// The TLS side of the HTTP server: the files' certificate, or a new self-signed one for
/// `names` if neither file exists.
pub(crate) fn acceptor(files: CertFiles, names: Vec<String>) -> anyhow::Result<TlsAcceptor> {
    match (files.key.exists(), files.cert.exists()) {
        (false, false) => make_self_signed(&files, names)?,
        (true, false) | (false, true) => bail!(
            "webrtcEncryption needs both webrtcServerKey ({}) and webrtcServerCert ({}); only \
             one exists (remove it to have a self-signed pair made)",
            files.key.display(),
            files.cert.display()
        ),
        (true, true) => {}
    }
    let before = stamp(&files);
    let certified = load(&files)?;
    info!(
        cert = %files.cert.display(),
        fingerprint = %fingerprint(&certified.cert[0]),
        "serving HTTPS"
    );
    let resolver = ReloadingCert {
        current: Mutex::new(Current {
            stamp: before,
            certified,
            checked: Instant::now(),
        }),
        files,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS set-up")?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    // The server speaks HTTP/1.1 only (see `listener`).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// This machine's host name, for the self-signed certificate.
pub(crate) fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // the CStr search below stops at its end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_self_signed_pair_then_reads_it_and_refuses_half_a_pair() {
        let dir = tempfile_dir();
        let files = CertFiles {
            key: dir.join("server.key"),
            cert: dir.join("server.crt"),
        };
        acceptor(files.clone(), vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let mode = fs::metadata(&files.key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let first = load(&files).unwrap();
        // Read again, not made again.
        acceptor(files.clone(), vec![]).unwrap();
        assert_eq!(load(&files).unwrap().cert, first.cert);
        fs::remove_file(&files.cert).unwrap();
        let err = acceptor(files.clone(), vec![]).err().unwrap().to_string();
        assert!(err.contains("only one exists"), "{err}");
        fs::write(&files.cert, "not PEM").unwrap();
        let err = format!("{:#}", acceptor(files.clone(), vec![]).err().unwrap());
        assert!(err.contains("no PEM certificate"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "camportal-tls-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir(&dir).unwrap();
        dir
    }
}
