//! TLS, the transport under HTTP: the rustls configurations of `https`
//! endpoints, built once at startup.
//!
//! The core never sees TLS. The shared per-connection driver wraps an
//! `https` endpoint's client socket and/or upstream socket in a rustls
//! *buffered* connection that it drives on in-memory buffers (`read_tls`
//! from the bytes a read returned, `process_new_packets`, `reader()`,
//! `writer()`, `write_tls` into a pooled buffer; see the private `transport`
//! module), so Tokio, smol and async-std get TLS from the same code. A
//! plaintext endpoint carries no TLS state at all.
//!
//! - **Upstream** (`target_type = "https"`, [`UpstreamTls`]): the server is
//!   verified against Mozilla's roots (`webpki-roots`, built in, the same on
//!   every machine) plus the CAs in `target_ca_file`; SNI is `target_host`.
//!   ALPN offers the protocols the core can speak on that connection
//!   ([`ouli_core::proxy::Connection::upstream_offer`]: with the default
//!   `target_protocol = "auto"` both `h2` and `http/1.1`, the client's
//!   first), and the server's pick is the protocol spoken (the core
//!   translates between the two); a server that picks nothing offered gets
//!   a 502. A failed handshake (unknown CA, wrong name, expired certificate)
//!   is a 502 naming the failure, never a fallback to plaintext. Only the
//!   loudly named `insecure_skip_verify_upstream_tls = true` accepts any
//!   certificate.
//! - **Listener** (`source_type = "https"`, [`ListenerTls`]): the
//!   certificate chain and key from `source_cert_file`/`source_key_file`,
//!   or, without them, a certificate for `localhost`, `127.0.0.1` and `::1`
//!   signed by a CA generated at startup ([`LocalCa`]) whose certificate is
//!   written to `<tls_dir>/ouli-ca.pem` (default: the recording dir) for
//!   clients to trust. ALPN offers `h2` and `http/1.1`; the core tells the
//!   two apart by the HTTP/2 preface.
//!
//! The cryptography is rustls's `ring` provider.

use crate::config::{EndpointConfig, TargetType};
use ouli_core::proxy::UpstreamWire;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    ServerConfig, ServerConnection, SignatureScheme,
};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The ALPN name of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN name of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// The file, in `tls_dir`, holding the generated CA's certificate.
pub const CA_FILE_NAME: &str = "ouli-ca.pem";

/// Why a TLS setting could not be used; the message names the file or field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(String);

fn setup_error(message: impl Into<String>) -> TlsSetupError {
    TlsSetupError(message.into())
}

/// The `ring` crypto provider, shared by every configuration.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// The ALPN name of `wire`.
pub fn alpn_name(wire: UpstreamWire) -> &'static [u8] {
    match wire {
        UpstreamWire::Http1 => ALPN_HTTP1,
        UpstreamWire::H2 => ALPN_H2,
    }
}

/// TLS towards one endpoint's upstream (`target_type = "https"`).
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    insecure: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// The client configuration of `endpoint`, or `None` for a plaintext
    /// target. Reads `target_ca_file`.
    pub fn for_endpoint(endpoint: &EndpointConfig) -> Result<Option<Self>, TlsSetupError> {
        if endpoint.target_type != TargetType::Https {
            return Ok(None);
        }
        let host = endpoint
            .target_host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&endpoint.target_host);
        let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
            setup_error(format!(
                "target_host {host:?} is not a valid TLS server name: {e}"
            ))
        })?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error(format!("TLS client setup: {e}")))?;
        let insecure = endpoint.insecure_skip_verify_upstream_tls;
        let config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate(provider())))
                .with_no_client_auth()
        } else {
            let mut roots =
                RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = &endpoint.target_ca_file {
                add_ca_file(&mut roots, path)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Some(UpstreamTls {
            config: Arc::new(config),
            server_name,
            insecure,
        }))
    }

    /// Whether this endpoint skips certificate verification.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// A new client session offering `offer` by ALPN, in that order.
    pub(crate) fn start(&self, offer: &[UpstreamWire]) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new_with_alpn(
            Arc::clone(&self.config),
            self.server_name.clone(),
            offer.iter().map(|w| alpn_name(*w).to_vec()).collect(),
        )
    }
}

/// The protocol the upstream picked by ALPN (`answer`) from `offer`. No
/// answer is HTTP/1.1 (a server without ALPN), never HTTP/2 (RFC 9113 §3.2
/// requires ALPN for h2).
pub fn check_alpn(offer: &[UpstreamWire], answer: Option<&[u8]>) -> Result<UpstreamWire, String> {
    let picked = match answer {
        None => UpstreamWire::Http1,
        Some(ALPN_H2) => UpstreamWire::H2,
        Some(ALPN_HTTP1) => UpstreamWire::Http1,
        Some(other) => {
            return Err(format!(
                "the upstream selected {:?} by ALPN, which was not offered",
                String::from_utf8_lossy(other)
            ))
        }
    };
    if offer.contains(&picked) {
        return Ok(picked);
    }
    let offered: Vec<_> = offer
        .iter()
        .map(|w| String::from_utf8_lossy(alpn_name(*w)))
        .collect();
    Err(match answer {
        None => format!(
            "the upstream does not speak HTTP/2 (it selected no protocol by ALPN, and {} was \
             offered): set target_protocol = \"auto\" or \"http1\" for an HTTP/1.1 upstream",
            offered.join(", ")
        ),
        Some(_) => format!(
            "the upstream selected {:?} by ALPN, but {} was offered",
            String::from_utf8_lossy(alpn_name(picked)),
            offered.join(", ")
        ),
    })
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsSetupError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| setup_error(format!("target_ca_file {shown}: {e}")))?;
    if certs.is_empty() {
        return Err(setup_error(format!(
            "target_ca_file {shown}: no PEM CERTIFICATE in the file"
        )));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| {
            setup_error(format!(
                "target_ca_file {shown}: not a usable CA certificate: {e}"
            ))
        })?;
    }
    Ok(())
}

/// `insecure_skip_verify_upstream_tls = true`: any certificate for any
/// name is accepted (the handshake signatures are still checked).
#[derive(Debug)]
struct AcceptAnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS on one endpoint's listener (`source_type = "https"`).
#[derive(Clone)]
pub struct ListenerTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls").finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// A listener presenting `chain` (leaf first) with `key`. ALPN offers
    /// `h2` and `http/1.1` (either is forwarded over any `target_protocol`).
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsSetupError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error(format!("TLS server setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| setup_error(format!("the certificate and key do not fit: {e}")))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(ListenerTls {
            config: Arc::new(config),
        })
    }

    /// A listener with the PEM certificate chain and key in these files.
    pub fn from_pem_files(cert_file: &Path, key_file: &Path) -> Result<Self, TlsSetupError> {
        let chain = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| setup_error(format!("source_cert_file {}: {e}", cert_file.display())))?;
        if chain.is_empty() {
            return Err(setup_error(format!(
                "source_cert_file {}: no PEM CERTIFICATE in the file",
                cert_file.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| setup_error(format!("source_key_file {}: {e}", key_file.display())))?;
        Self::new(chain, key).map_err(|e| {
            setup_error(format!(
                "source_cert_file {} and source_key_file {}: {e}",
                cert_file.display(),
                key_file.display()
            ))
        })
    }

    /// A new server session for an accepted connection.
    pub(crate) fn accept(&self) -> Result<ServerConnection, rustls::Error> {
        ServerConnection::new(Arc::clone(&self.config))
    }
}

/// A CA generated at startup and the `localhost`/`127.0.0.1`/`::1`
/// certificate it signed, for `source_type = "https"` endpoints without
/// certificate files. The keys stay in memory; only the CA certificate is
/// written out, for clients to trust.
pub struct LocalCa {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The names the generated listener certificate is valid for.
pub const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

impl LocalCa {
    /// A fresh CA ("Ouli local CA") and a leaf certificate for
    /// [`LOCAL_NAMES`], valid from today for a year.
    pub fn generate() -> Result<Self, TlsSetupError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let failed = |e: rcgen::Error| setup_error(format!("cannot generate a certificate: {e}"));

        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca.distinguished_name
            .push(DnType::CommonName, "Ouli local CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut ca);
        let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().map_err(failed)?;
        let names: Vec<String> = LOCAL_NAMES.iter().map(|n| n.to_string()).collect();
        let mut leaf = CertificateParams::new(names).map_err(failed)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        set_validity(&mut leaf);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(failed)?;

        Ok(LocalCa {
            ca_pem: ca_cert.pem(),
            chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            key: leaf_key.serialize_der(),
            path: None,
        })
    }

    /// The CA certificate (PEM), for clients to trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Where [`LocalCa::write_to`] wrote the CA certificate.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes the CA certificate to `dir`/[`CA_FILE_NAME`] (creating `dir`),
    /// atomically: a reader never sees half a file.
    pub fn write_to(&mut self, dir: &Path) -> io::Result<&Path> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(CA_FILE_NAME);
        let temp = dir.join(format!(".{CA_FILE_NAME}.{}.tmp", std::process::id()));
        std::fs::write(&temp, &self.ca_pem)?;
        if let Err(e) = std::fs::rename(&temp, &path) {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        Ok(self.path.insert(path))
    }

    /// The listener configuration presenting the generated certificate.
    pub fn listener(&self) -> Result<ListenerTls, TlsSetupError> {
        ListenerTls::new(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
        )
    }
}

/// Valid from today (00:00 UTC) to the same day next year.
fn set_validity(params: &mut rcgen::CertificateParams) {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    let (year, month, day) = civil_from_days(days);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + 1, month, day.min(28));
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// The message for a TLS failure: rustls's own text (which names the
/// certificate problem), with a hint for the common fixes.
pub fn describe_error(error: &rustls::Error) -> String {
    let hint = match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            " (the certificate's issuer is not a trusted CA: add the CA to target_ca_file)"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => " (target_host is the name checked)",
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol) => {
            " (the upstream refused every protocol offered by ALPN: target_protocol = \"h2\" \
             offers only h2, \"http1\" only http/1.1, \"auto\" both)"
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.to_string().contains("CaUsedAsEndEntity") =>
        {
            " (the server presents a CA certificate (basicConstraints CA:TRUE, as `openssl req \
             -x509` makes by default) as its own: give it a certificate issued by that CA)"
        }
        _ => "",
    };
    format!("{error}{hint}")
}

/// [`describe_error`] for an I/O error carrying a rustls error, else the
/// error's own text.
pub fn describe_io_error(error: &io::Error) -> String {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => describe_error(tls),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn alpn_answers() {
        use UpstreamWire::{Http1, H2};
        assert_eq!(check_alpn(&[H2], Some(b"h2")), Ok(H2));
        assert_eq!(check_alpn(&[Http1], Some(b"http/1.1")), Ok(Http1));
        assert_eq!(check_alpn(&[Http1], None), Ok(Http1));
        // Both offered: the upstream's pick is what is spoken.
        assert_eq!(check_alpn(&[H2, Http1], Some(b"http/1.1")), Ok(Http1));
        assert_eq!(check_alpn(&[Http1, H2], Some(b"h2")), Ok(H2));
        assert_eq!(check_alpn(&[H2, Http1], None), Ok(Http1));
        let e = check_alpn(&[H2], None).unwrap_err();
        assert!(e.contains("does not speak HTTP/2"), "{e}");
        let e = check_alpn(&[Http1], Some(b"h2")).unwrap_err();
        assert!(e.contains("\"h2\"") && e.contains("http/1.1"), "{e}");
        let e = check_alpn(&[Http1, H2], Some(b"spdy/3")).unwrap_err();
        assert!(e.contains("spdy/3") && e.contains("not offered"), "{e}");
    }

    #[test]
    fn local_ca_signs_a_usable_listener_certificate() {
        let mut ca = LocalCa::generate().unwrap();
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        ca.listener().unwrap();
        let dir = std::env::temp_dir().join(format!("ouli-tls-unit-{}", std::process::id()));
        let path = ca.write_to(&dir).unwrap().to_path_buf();
        assert_eq!(path, dir.join(CA_FILE_NAME));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ca.ca_pem());
        // The written CA verifies the leaf for every local name.
        let mut roots = RootCertStore::empty();
        add_ca_file(&mut roots, &path).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        for name in LOCAL_NAMES {
            verifier
                .verify_server_cert(
                    &ca.chain[0],
                    &ca.chain[1..],
                    &ServerName::try_from(*name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_named() {
        let missing = Path::new("/nonexistent/ouli-ca.pem");
        let mut roots = RootCertStore::empty();
        let e = add_ca_file(&mut roots, missing).unwrap_err().to_string();
        assert!(e.contains("target_ca_file /nonexistent/ouli-ca.pem"), "{e}");
        let e = ListenerTls::from_pem_files(missing, missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("source_cert_file"), "{e}");
    }

    #[test]
    fn unknown_issuer_gets_a_hint() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let text = describe_error(&e);
        assert!(
            text.contains("UnknownIssuer") && text.contains("target_ca_file"),
            "{text}"
        );
        let io = io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(describe_io_error(&io), text);
    }
}
