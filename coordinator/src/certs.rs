//! The coordinator's small PKI: a CA, the server certificate, node certificates, revocation.
//!
//! `coordinator certs init` makes `ca.crt`/`ca.key` and a server certificate for the names nodes
//! dial; `certs issue NODE` signs `nodes/NODE.crt`/`.key` with subject CN = NODE (the identity the
//! coordinator sees); `certs revoke NODE` appends NODE to `revoked.txt`, which the running
//! coordinator re-reads when it changes ([`crate::auth::RevocationList`]). Keys are ECDSA P-256
//! (rcgen's default), written with mode 0600. Certificates do not expire on their own (rcgen's
//! default validity); revocation is the way to remove a node.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use ruvdllm::fsutil::write_atomic;

use crate::auth::{AuthError, check_node_id};

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0} already exists (refusing to overwrite a CA)")]
    Exists(PathBuf),
    #[error(transparent)]
    NodeId(#[from] AuthError),
}

/// Paths inside a certificate folder.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn node_cert(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(format!("{node}.crt"))
    }
    pub fn node_key(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(format!("{node}.key"))
    }
    pub fn revocation_list(&self) -> PathBuf {
        self.dir.join("revoked.txt")
    }
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    write_atomic(path, bytes).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates the CA and a server certificate valid for `server_names` (DNS names or IPs).
pub fn init(layout: &Layout, server_names: &[String]) -> Result<(), CertError> {
    if layout.ca_key().exists() {
        return Err(CertError::Exists(layout.ca_key()));
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "RuvDLLM federation CA");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write(&layout.ca_cert(), cert.pem().as_bytes(), false)?;
    write(&layout.ca_key(), key.serialize_pem().as_bytes(), true)?;
    let issuer = Issuer::new(params, key);

    let mut sp = CertificateParams::new(server_names.to_vec())?;
    sp.distinguished_name
        .push(DnType::CommonName, "ruvdllm-coordinator");
    sp.use_authority_key_identifier_extension = true;
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let skey = KeyPair::generate()?;
    let scert = sp.signed_by(&skey, &issuer)?;
    write(&layout.server_cert(), scert.pem().as_bytes(), false)?;
    write(&layout.server_key(), skey.serialize_pem().as_bytes(), true)?;
    if !layout.revocation_list().exists() {
        write(&layout.revocation_list(), b"", false)?;
    }
    Ok(())
}

/// Issues a client certificate with subject CN = `node`; returns (cert, key) paths.
pub fn issue(layout: &Layout, node: &str) -> Result<(PathBuf, PathBuf), CertError> {
    check_node_id(node)?;
    let ca_key = KeyPair::from_pem(&read(&layout.ca_key())?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&layout.ca_cert())?, ca_key)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, node);
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    let (cp, kp) = (layout.node_cert(node), layout.node_key(node));
    write(&cp, cert.pem().as_bytes(), false)?;
    write(&kp, key.serialize_pem().as_bytes(), true)?;
    Ok((cp, kp))
}

/// Adds `node` to the revocation list at `path` (idempotent).
pub fn revoke(path: &Path, node: &str) -> Result<(), CertError> {
    check_node_id(node)?;
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(CertError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.lines().any(|l| l.trim() == node) {
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(node);
    text.push('\n');
    write(path, text.as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::node_id_from_der;

    #[test]
    fn init_issue_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        init(&l, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(matches!(init(&l, &[]), Err(CertError::Exists(_))));
        let (cert, _) = issue(&l, "node-1").unwrap();
        let pem = std::fs::read_to_string(cert).unwrap();
        let der = pem_body(&pem);
        assert_eq!(node_id_from_der(&der).unwrap(), "node-1");
        assert!(issue(&l, "../evil").is_err());
        revoke(&l.revocation_list(), "node-1").unwrap();
        revoke(&l.revocation_list(), "node-1").unwrap();
        let list = std::fs::read_to_string(l.revocation_list()).unwrap();
        assert_eq!(list, "node-1\n");
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64_decode(&b64)
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = T.iter().position(|&t| t == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }
}
