//! Datagrams signed with a holder's certificate key: what one agent tells
//! another directly, with no controller in between (the provisional owner
//! of a VIP while the controller is away).
//!
//! The sender signs with the private key of its certificate (ECDSA P-256
//! with SHA-256, the keys `vipcast pki` issues) and sends the certificate
//! along; the receiver verifies the certificate against the CA (as the
//! controller verifies a client's), takes the holder's identity from it
//! ([`crate::identity_of`]) and checks the signature with its public key.
//! Certificates already verified are remembered by digest (bounded), so a
//! datagram costs one signature check.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use vipcast_api::Identity;

use crate::Error;

/// Verified certificates remembered at most.
pub const CACHE: usize = 4096;

/// Signs as the holder of a certificate.
pub struct Signer {
    cert: Vec<u8>,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("cert_len", &self.cert.len()).finish_non_exhaustive()
    }
}

impl Signer {
    /// The leaf certificate of `cert` and its private key `key` (PKCS#8,
    /// ECDSA P-256); refused if the key is not the certificate's.
    pub fn load(cert: &Path, key: &Path) -> Result<Signer, Error> {
        let leaf = crate::load_certs(cert)?.into_iter().next().ok_or_else(|| Error::file(cert, "no certificate"))?;
        let pkcs8 = match crate::load_key(key)? {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => return Err(Error::file(key, "not a PKCS#8 key (vipcast pki issues those)")),
        };
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8)
            .map_err(|e| Error::file(key, format!("not an ECDSA P-256 key: {e}")))?;
        if public_key(&leaf).as_deref() != Some(pair.public_key().as_ref()) {
            return Err(Error::file(key, format!("not the key of {}", cert.display())));
        }
        Ok(Signer { cert: leaf.to_vec(), key: pair, rng: SystemRandom::new() })
    }

    /// The certificate (DER) to send along.
    pub fn cert(&self) -> &[u8] {
        &self.cert
    }

    /// The signature of `message` (ASN.1 DER, at most 72 bytes).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let sig = self.key.sign(&self.rng, message).map_err(|_| Error::Invalid("signing failed".into()))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// Checks signed datagrams against a CA.
pub struct Verifier {
    chain: Arc<dyn ClientCertVerifier>,
    /// Certificate digest -> (holder, public key, not after).
    known: HashMap<[u8; 32], (Identity, Vec<u8>, i64)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("known", &self.known.len()).finish_non_exhaustive()
    }
}

impl Verifier {
    /// Trusts the certificates the CA in `ca` issued.
    pub fn load(ca: &Path) -> Result<Verifier, Error> {
        let chain = WebPkiClientVerifier::builder_with_provider(crate::roots(ca)?, crate::provider())
            .build()
            .map_err(|e| Error::Invalid(format!("certificate verifier: {e}")))?;
        Ok(Verifier { chain, known: HashMap::new() })
    }

    /// Who signed `message` with `sig`, sending certificate `cert`: an
    /// error says why the datagram is not to be believed.
    pub fn verify(&mut self, cert: &[u8], message: &[u8], sig: &[u8]) -> Result<Identity, String> {
        let now = UnixTime::now();
        let mut id = [0u8; 32];
        id.copy_from_slice(digest::digest(&digest::SHA256, cert).as_ref());
        let (identity, key) = match self.known.get(&id) {
            Some((who, key, not_after)) if *not_after >= now.as_secs() as i64 => (who.clone(), key.clone()),
            _ => {
                let der = CertificateDer::from(cert);
                self.chain.verify_client_cert(&der, &[], now).map_err(|e| format!("certificate: {e}"))?;
                let who = crate::identity_of(&der).ok_or("the certificate names no vipcast identity")?;
                let key = public_key(&der).ok_or("the certificate's public key is unreadable")?;
                let not_after = crate::not_after(&der).unwrap_or(0);
                if self.known.len() >= CACHE {
                    self.known.clear();
                }
                self.known.insert(id, (who.clone(), key.clone(), not_after));
                (who, key)
            }
        };
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &key)
            .verify(message, sig)
            .map_err(|_| format!("bad signature from {}", identity.actor()))?;
        Ok(identity)
    }
}

/// The subject public key of a certificate.
fn public_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(x509.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Request};
    use vipcast_api::PeerRole;

    #[test]
    fn a_signature_names_its_holder_and_nothing_else_passes() {
        let dir = tempfile::tempdir().unwrap();
        let d = pki::init(dir.path()).unwrap();
        for name in ["hv1", "hv2"] {
            pki::issue(dir.path(), &Request { role: PeerRole::Agent, name: name.into(), sans: vec![], days: 30 })
                .unwrap();
        }
        let hv1 = Signer::load(&d.cert("hv1"), &d.key("hv1")).unwrap();
        assert!(Signer::load(&d.cert("hv1"), &d.key("hv2")).is_err(), "another holder's key");
        let mut v = Verifier::load(&d.ca_cert()).unwrap();
        let sig = hv1.sign(b"pay-vip to 02:00:00:00:00:02").unwrap();
        let who = v.verify(hv1.cert(), b"pay-vip to 02:00:00:00:00:02", &sig).unwrap();
        assert_eq!(who, Identity::new(PeerRole::Agent, "hv1"));
        // Again, from the cache.
        assert!(v.verify(hv1.cert(), b"pay-vip to 02:00:00:00:00:02", &sig).is_ok());
        // Another message, a damaged signature, a certificate of another CA.
        assert!(v.verify(hv1.cert(), b"pay-vip to 02:00:00:00:00:03", &sig).is_err());
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(v.verify(hv1.cert(), b"pay-vip to 02:00:00:00:00:02", &bad).is_err());
        let other = tempfile::tempdir().unwrap();
        let o = pki::init(other.path()).unwrap();
        pki::issue(other.path(), &Request { role: PeerRole::Agent, name: "hv1".into(), sans: vec![], days: 30 })
            .unwrap();
        let forger = Signer::load(&o.cert("hv1"), &o.key("hv1")).unwrap();
        let sig = forger.sign(b"m").unwrap();
        assert!(v.verify(forger.cert(), b"m", &sig).unwrap_err().starts_with("certificate"));
        assert!(v.verify(b"not a certificate", b"m", &sig).is_err());
    }
}
