//! The mutual-TLS flags every client of the controller takes.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// CA certificate the controller's certificate is checked against
    /// (mutual TLS: the controller URL is then https://).
    #[arg(long, env = "VIPCAST_CA")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (`vipcast pki issue`).
    #[arg(long, env = "VIPCAST_CERT")]
    pub cert: Option<PathBuf>,
    /// This client's private key.
    #[arg(long, env = "VIPCAST_KEY")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    pub fn files(&self) -> anyhow::Result<Option<vipcast_tls::ClientFiles>> {
        Ok(vipcast_tls::ClientFiles::from_parts(self.ca.clone(), self.cert.clone(), self.key.clone())?)
    }
}
