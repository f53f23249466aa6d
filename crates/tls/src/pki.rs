//! A small PKI: one CA in a directory, and the certificates it issues.
//!
//! ```text
//!  DIR/ca.crt  DIR/ca.key          the CA (10 years)
//!  DIR/heartbeat.secret            the controller's heartbeat secret (32 random bytes, hex)
//!  DIR/NAME.crt  DIR/NAME.key      a certificate (1 year by default)
//!  DIR/NAME.hbkey                  an agent's heartbeat key (derived from the secret)
//! ```
//! Private keys, the secret and heartbeat keys are written mode 0600 and
//! never overwritten.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use vipcast_api::{Identity, PeerRole};

use crate::Error;
use crate::heartbeat;

/// Days a CA is valid.
pub const CA_DAYS: i64 = 3650;
/// Days an issued certificate is valid by default.
pub const DEFAULT_DAYS: i64 = 365;

/// The files of a PKI directory.
#[derive(Debug, Clone)]
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    pub fn secret(&self) -> PathBuf {
        self.0.join("heartbeat.secret")
    }
    pub fn cert(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.crt"))
    }
    pub fn key(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.key"))
    }
    pub fn hbkey(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.hbkey"))
    }
}

fn rc(e: rcgen::Error) -> Error {
    Error::Invalid(e.to_string())
}

/// Writes `contents` to a new file `path` (mode `mode`); refuses to replace one.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
        Error::file(
            path,
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                "exists already: not replaced".to_string()
            } else {
                e.to_string()
            },
        )
    })?;
    f.write_all(contents).and_then(|()| f.sync_all()).map_err(|e| Error::file(path, e))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Creates the CA and the heartbeat secret in `dir` (created if missing).
pub fn init(dir: &Path) -> Result<Dir, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let d = Dir(dir.to_path_buf());
    if d.ca_key().exists() {
        return Err(Error::file(&d.ca_key(), "exists already: this directory holds a CA"));
    }
    let key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "vipcast CA");
    dn.push(DnType::OrganizationName, "vipcast");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key).map_err(rc)?;
    write_new(&d.ca_key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&d.ca_cert(), cert.pem().as_bytes(), 0o644)?;
    write_new(&d.secret(), heartbeat::new_secret()?.as_bytes(), 0o600)?;
    Ok(d)
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct Request {
    pub role: PeerRole,
    pub name: String,
    /// IP addresses and DNS names (server certificates).
    pub sans: Vec<String>,
    pub days: i64,
}

/// Issues a certificate from the CA in `dir`: `NAME.crt`, `NAME.key`, and
/// for an agent its heartbeat key `NAME.hbkey`. Returns the files written.
pub fn issue(dir: &Path, req: &Request) -> Result<Vec<PathBuf>, Error> {
    let d = Dir(dir.to_path_buf());
    if !vipcast_api::identity::valid_name(&req.name) {
        return Err(Error::Invalid(format!("name {:?}: 1-63 letters, digits, '.', '_' or '-'", req.name)));
    }
    if !(1..=CA_DAYS).contains(&req.days) {
        return Err(Error::Invalid(format!("days {}: 1 to {CA_DAYS}", req.days)));
    }
    let ca_key_pem = fs::read_to_string(d.ca_key()).map_err(|e| Error::file(&d.ca_key(), e))?;
    let ca_pem = fs::read_to_string(d.ca_cert()).map_err(|e| Error::file(&d.ca_cert(), e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| Error::file(&d.ca_key(), e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| Error::file(&d.ca_cert(), e))?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, req.name.as_str());
    dn.push(DnType::OrganizationalUnitName, req.role.as_str());
    dn.push(DnType::OrganizationName, "vipcast");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut params, req.days);
    let id = Identity::new(req.role, &req.name);
    params.subject_alt_names.push(SanType::URI(id.uri().try_into().map_err(rc)?));
    if req.role == PeerRole::Controller {
        if req.sans.is_empty() {
            return Err(Error::Invalid("a controller certificate needs --san (its IP addresses or DNS names)".into()));
        }
        for san in &req.sans {
            params.subject_alt_names.push(match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    san.clone()
                        .try_into()
                        .map_err(|_| Error::Invalid(format!("--san {san:?}: not an IP address or DNS name")))?,
                ),
            });
        }
        // Client authentication too: the controller presents it to etcd
        // (`--etcd-cert`), and etcd's own server certificate, issued the
        // same way, is what etcd's JSON gateway presents to etcd's gRPC.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    } else {
        if !req.sans.is_empty() {
            return Err(Error::Invalid("--san is for controller certificates".into()));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    // Refuse before writing anything if the name is taken.
    for path in [d.cert(&req.name), d.key(&req.name)] {
        if path.exists() {
            return Err(Error::file(&path, "exists already: not replaced"));
        }
    }
    let key = KeyPair::generate().map_err(rc)?;
    let cert = params.signed_by(&key, &issuer).map_err(rc)?;
    write_new(&d.key(&req.name), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&d.cert(&req.name), cert.pem().as_bytes(), 0o644)?;
    let mut written = vec![d.cert(&req.name), d.key(&req.name)];
    if req.role == PeerRole::Agent {
        let secret = heartbeat::read_secret(&d.secret())?;
        let key = heartbeat::chassis_key(&secret, &req.name);
        write_new(&d.hbkey(&req.name), heartbeat::to_hex(&key).as_bytes(), 0o600)?;
        written.push(d.hbkey(&req.name));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_ca_issues_certificates_that_name_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let d = init(dir.path()).unwrap();
        assert!(init(dir.path()).is_err(), "a second CA over the first");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&d.ca_key()), mode(&d.secret())), (0o600, 0o600));
        let agent = Request { role: PeerRole::Agent, name: "hv1".into(), sans: vec![], days: 30 };
        let files = issue(dir.path(), &agent).unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(mode(&d.key("hv1")), 0o600);
        let cert = &crate::load_certs(&d.cert("hv1")).unwrap()[0];
        assert_eq!(crate::identity_of(cert), Some(Identity::new(PeerRole::Agent, "hv1")));
        let expires = crate::not_after(cert).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((now + 29 * 86_400..=now + 31 * 86_400).contains(&expires));
        assert!(issue(dir.path(), &agent).is_err(), "not replaced");
        let server = Request { role: PeerRole::Controller, name: "ctl".into(), sans: vec![], days: 30 };
        assert!(issue(dir.path(), &server).is_err(), "a server certificate needs its names");
        let server = Request { sans: vec!["127.0.0.1".into(), "controller.example".into()], ..server };
        issue(dir.path(), &server).unwrap();
        assert!(issue(dir.path(), &Request { name: "a/b".into(), ..agent }).is_err());
    }
}
