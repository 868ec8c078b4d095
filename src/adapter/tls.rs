//! TLS files of a connection (`tls:` on `kafka` and `rabbitmq` connections): an extra CA
//! to trust and a client certificate for mutual TLS. Server certificates are always
//! verified, against the system trust store plus `ca_file`; there is no switch to turn
//! verification off in bridge's own settings.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of CA certificates trusted in addition to the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), for brokers that require mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// A client certificate needs its key and the other way round.
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err("tls.cert_file needs tls.key_file".into()),
            (None, Some(_)) => Err("tls.key_file needs tls.cert_file".into()),
            _ => Ok(()),
        }
    }

    /// Reads `file`, naming it in the error (never its content).
    pub fn read(file: &std::path::Path) -> Result<Vec<u8>, String> {
        std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))
    }
}
