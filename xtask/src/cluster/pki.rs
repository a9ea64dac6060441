//! Credentials of the test cluster: its CA and certificates, the static tokens of its components
//! and their kubeconfigs.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use base64::Engine;

use super::{CLUSTER_DOMAIN, KUBE_PORT, SERVICE_IP};
use crate::process;

// An explicit config instead of the system openssl.cnf: Go and rustls reject a serving certificate
// without an IP SAN, and rustls rejects a CA without CA:TRUE.
fn openssl_cnf(node_ip: Ipv4Addr) -> String {
    format!(
        "[req]
distinguished_name = dn
prompt = no
[dn]
CN = chatflow-test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:{node_ip},IP:{SERVICE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"
    )
}

fn openssl(log: &Path, what: &str, pki: &Path, args: &[&str]) -> Result<()> {
    process::logged(
        log,
        what,
        Command::new("openssl").current_dir(pki).args(args),
    )
}

/// Writes into PKI a CA; the API server's certificate, for every name and address pods and the
/// host use; the client certificate it shows the kubelet; and the service-account key pair.
pub fn write(pki: &Path, node_ip: Ipv4Addr, log: &Path) -> Result<()> {
    fs::create_dir_all(pki)?;
    fs::write(pki.join("openssl.cnf"), openssl_cnf(node_ip))?;
    // P-256 keys take milliseconds to make, RSA ones up to a second each.
    const EC: [&str; 5] = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca",
    ];
    ca.extend(EC);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=chatflow-test-ca",
    ]);
    openssl(log, "the cluster's CA", pki, &ca)?;
    cert(pki, log, "apiserver", "server", "/CN=kube-apiserver")?;
    cert(
        pki,
        log,
        "apiserver-kubelet-client",
        "client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
    )?;
    openssl(
        log,
        "the service-account key",
        pki,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(
        log,
        "the service-account public key",
        pki,
        &["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
    )
}

fn cert(pki: &Path, log: &Path, name: &str, extensions: &str, subject: &str) -> Result<()> {
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    openssl(
        log,
        &format!("{name} key"),
        pki,
        &[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    )?;
    let serial = format!("0x{}", random_hex(16)?);
    openssl(
        log,
        &format!("{name} certificate"),
        pki,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            extensions,
            "-out",
            &crt,
        ],
    )
}

/// BYTES random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Adds a static token for USER (in GROUP) to the API server's token file and writes a kubeconfig
/// FILE in RUN_DIR that uses it. The admin's also goes into the header the readiness probe sends.
pub fn identity(
    run_dir: &Path,
    node_ip: Ipv4Addr,
    file: &str,
    user: &str,
    group: Option<&str>,
) -> Result<()> {
    let token = random_hex(24)?;
    let group = group.map(|g| format!(",\"{g}\"")).unwrap_or_default();
    let mut tokens = process::append(&run_dir.join("pki/tokens.csv"))?;
    writeln!(tokens, "{token},{user},{user}{group}")?;
    if user == "admin" {
        fs::write(
            run_dir.join("auth-header"),
            format!("Authorization: Bearer {token}\n"),
        )?;
    }
    let ca = fs::read(run_dir.join("pki/ca.crt"))?;
    write_private(
        &run_dir.join(file),
        &kubeconfig(&format!("https://{node_ip}:{KUBE_PORT}"), &ca, &token),
    )
}

// Self-contained (CA inline) so it still works when copied; namespace default like a fresh cluster.
fn kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: chatflow-test
    cluster:
      server: {server}
      certificate-authority-data: {}
users:
  - name: chatflow-test
    user:
      token: {token}
contexts:
  - name: chatflow-test
    context:
      cluster: chatflow-test
      user: chatflow-test
      namespace: default
current-context: chatflow-test
",
        base64::engine::general_purpose::STANDARD.encode(ca_pem)
    )
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    Ok(())
}
