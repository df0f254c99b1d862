// Copyright 2026 The gpu-sidecar Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! TLS on the TCP endpoint, with a CA and certificates this test makes (the `openssl`
//! crate): server only; client certificates required; plaintext refused; SIGHUP reload with
//! open calls going on; files that cannot be used exit 2 naming their key.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gpu_sidecar::proto::health::health_check_response::ServingStatus;
use gpu_sidecar::proto::health_grpc::HealthClient;
use grpcio::{ChannelBuilder, ChannelCredentialsBuilder, EnvBuilder, Environment};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use crate::util::{
    call_option, expect_exit, health_request, http, ConfigText, Sidecar, TestDir, PATIENCE,
};

/// A certificate and its key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Issued {
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().expect("pem")
    }

    pub fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().expect("pem")
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        fs::write(&cert, self.cert_pem()).expect("write cert");
        fs::write(&key, self.key_pem()).expect("write key");
        (cert, key)
    }
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
    PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey")
}

/// A certificate for `common_name`, signed by `issuer` (self-signed without one); a CA's
/// when `ca`, else a leaf for 127.0.0.1 and localhost, for servers and clients alike.
pub fn issue(common_name: &str, issuer: Option<&Issued>, ca: bool) -> Issued {
    issue_for_days(common_name, issuer, ca, 30)
}

/// [`issue`], valid for `days` from now.
fn issue_for_days(common_name: &str, issuer: Option<&Issued>, ca: bool, days: u32) -> Issued {
    let key = new_key();
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", common_name).expect("cn");
    let name = name.build();
    let mut builder = X509Builder::new().expect("builder");
    builder.set_version(2).expect("version");
    let serial = BigNum::from_u32(fastrand::u32(1..u32::MAX)).expect("serial");
    builder
        .set_serial_number(&serial.to_asn1_integer().expect("serial"))
        .expect("serial");
    builder.set_subject_name(&name).expect("subject");
    builder
        .set_issuer_name(issuer.map_or(&name, |issuer| issuer.cert.subject_name()))
        .expect("issuer");
    builder.set_pubkey(&key).expect("pubkey");
    builder
        .set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    builder
        .set_not_after(&Asn1Time::days_from_now(days).expect("time"))
        .expect("not after");
    if ca {
        let constraints = BasicConstraints::new().critical().ca().build().expect("ca");
        builder.append_extension(constraints).expect("extension");
    } else {
        let context = builder.x509v3_context(issuer.map(|issuer| issuer.cert.as_ref()), None);
        let names = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&context)
            .expect("san");
        builder.append_extension(names).expect("extension");
        let usage = ExtendedKeyUsage::new()
            .server_auth()
            .client_auth()
            .build()
            .expect("eku");
        builder.append_extension(usage).expect("extension");
    }
    let signer = issuer.map_or(&key, |issuer| &issuer.key);
    builder.sign(signer, MessageDigest::sha256()).expect("sign");
    Issued {
        cert: builder.build(),
        key,
    }
}

/// A CA and a server certificate it signed, written into `dir` as `ca.pem`, `server.pem`
/// and `server.key`.
struct Pki {
    ca: Issued,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        let ca = issue(&format!("{name} CA"), None, true);
        let server = issue("gpu-sidecar", Some(&ca), false);
        let (ca_file, _) = ca.write(dir, &format!("{name}-ca"));
        let (cert_file, key_file) = server.write(dir, &format!("{name}-server"));
        Pki {
            ca,
            ca_file,
            cert_file,
            key_file,
        }
    }
}

/// `[sidecar.rpc.tls]` lines for `rpc_extra`.
fn tls_table(cert: &Path, key: &Path, client_ca: Option<&Path>) -> String {
    let mut table = format!(
        "[sidecar.rpc.tls]\ncert-file = {:?}\nkey-file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    if let Some(ca) = client_ca {
        table.push_str(&format!(
            "client-ca-file = {:?}\n",
            ca.display().to_string()
        ));
    }
    table
}

/// A READY sidecar on a loopback TCP port with `tls` lines (as [`tls_table`] writes them).
fn tls_sidecar(dir: &TestDir, tls: &str) -> (Sidecar, String) {
    dir.write_model("model.bin", 4096);
    tls_sidecar_on(dir, "model.bin", tls)
}

/// The same, serving the file `model` of `dir`.
fn tls_sidecar_on(dir: &TestDir, model: &str, tls: &str) -> (Sidecar, String) {
    let mut config = ConfigText::new(dir);
    config.model = model.to_string();
    config.endpoint = "127.0.0.1:0".to_string();
    // [sidecar.rpc.tls] is a table of its own: it comes after [sidecar.rpc]'s keys.
    config.rpc_extra = tls.to_string();
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&config.render()),
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    sidecar.wait_ready();
    let target = sidecar.grpc_target();
    (sidecar, target)
}

/// A client of `target` trusting `ca`, presenting `identity` (certificate, key) if given.
fn tls_client(
    target: &str,
    ca: &[u8],
    identity: Option<&Issued>,
) -> (Arc<Environment>, HealthClient) {
    let environment = Arc::new(EnvBuilder::new().cq_count(1).build());
    let mut credentials = ChannelCredentialsBuilder::new().root_cert(ca.to_vec());
    if let Some(identity) = identity {
        credentials = credentials.cert(identity.cert_pem(), identity.key_pem());
    }
    let channel = ChannelBuilder::new(Arc::clone(&environment))
        .set_credentials(credentials.build())
        .connect(target);
    (environment, HealthClient::new(channel))
}

fn plaintext_client(target: &str) -> (Arc<Environment>, HealthClient) {
    let environment = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(Arc::clone(&environment)).connect(target);
    (environment, HealthClient::new(channel))
}

/// Whether a health check over `client` is answered SERVING (a short deadline: a refused
/// handshake fails the call, it does not hang).
fn served(client: &HealthClient) -> bool {
    client
        .check_opt(
            &health_request(""),
            grpcio::CallOption::default().timeout(Duration::from_secs(5)),
        )
        .is_ok_and(|answer| answer.status == ServingStatus::SERVING.into())
}

#[test]
fn a_client_that_trusts_the_ca_is_served_and_plaintext_is_refused() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.path(), "one");
    let (sidecar, target) = tls_sidecar(&dir, &tls_table(&pki.cert_file, &pki.key_file, None));
    assert!(
        sidecar
            .log()
            .contains(&format!("TLS on {target}: certificate")),
        "{}",
        sidecar.log()
    );
    let (_env, client) = tls_client(&target, &pki.ca.cert_pem(), None);
    assert!(served(&client), "log:\n{}", sidecar.log());
    let (_env, plaintext) = plaintext_client(&target);
    assert!(!served(&plaintext), "a plaintext client was served");
    let other = Pki::new(dir.path(), "other");
    let (_env, untrusting) = tls_client(&target, &other.ca.cert_pem(), None);
    assert!(
        !served(&untrusting),
        "a client that trusts another CA was served"
    );
    let metrics = http(sidecar.health_addr(), "GET", "/metrics")
        .expect("metrics")
        .1;
    assert!(
        metrics.contains("gpu_sidecar_tls_certificate_expiry_timestamp_seconds{cert_file="),
        "{metrics}"
    );
}

#[test]
fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.path(), "one");
    let (sidecar, target) = tls_sidecar(
        &dir,
        &tls_table(&pki.cert_file, &pki.key_file, Some(&pki.ca_file)),
    );
    assert!(
        sidecar.log().contains("client certificates required"),
        "{}",
        sidecar.log()
    );
    let trusted = pki.ca.cert_pem();
    let (_env, anonymous) = tls_client(&target, &trusted, None);
    assert!(
        !served(&anonymous),
        "a client without a certificate was served"
    );
    let stranger_ca = issue("stranger CA", None, true);
    let stranger = issue("stranger", Some(&stranger_ca), false);
    let (_env, foreign) = tls_client(&target, &trusted, Some(&stranger));
    assert!(!served(&foreign), "a certificate of another CA was served");
    let member = issue("flink-taskmanager", Some(&pki.ca), false);
    let (_env, client) = tls_client(&target, &trusted, Some(&member));
    assert!(served(&client), "log:\n{}", sidecar.log());
}

#[test]
fn sighup_reloads_the_files_for_new_connections_while_open_calls_go_on() {
    let dir = TestDir::new();
    let first = Pki::new(dir.path(), "first");
    let (mut sidecar, target) =
        tls_sidecar(&dir, &tls_table(&first.cert_file, &first.key_file, None));
    // A call open across the reload: Health.Watch, on a connection made with the first
    // certificate.
    let (_env, old) = tls_client(&target, &first.ca.cert_pem(), None);
    let mut watch = old
        .watch_opt(&health_request(""), call_option())
        .expect("watch");
    let first_status = futures_executor::block_on(watch.next())
        .expect("a status")
        .expect("status");
    assert_eq!(first_status.status, ServingStatus::SERVING.into());

    // A new certificate, of another CA, in the same files; then SIGHUP.
    let second = Pki::new(dir.path(), "second");
    fs::copy(&second.cert_file, &first.cert_file).expect("copy");
    fs::copy(&second.key_file, &first.key_file).expect("copy");
    sidecar.signal(libc::SIGHUP);
    sidecar.wait_for_log("SIGHUP: TLS certificate");
    let (_env, new) = tls_client(&target, &second.ca.cert_pem(), None);
    assert!(served(&new), "new connections get the new certificate");
    let (_env, stale) = tls_client(&target, &first.ca.cert_pem(), None);
    assert!(!served(&stale), "a new connection got the old certificate");
    // The old connection serves on, and its open call too.
    assert!(
        served(&old),
        "the connection made before the reload was dropped"
    );

    // Files that cannot be used: logged, counted, and the certificate in use serves on.
    fs::write(&first.key_file, b"not a key").expect("write");
    sidecar.signal(libc::SIGHUP);
    let line = sidecar.wait_for_log("SIGHUP: TLS files not reloaded");
    assert!(line.contains("sidecar.rpc.tls.key-file"), "{line}");
    let (_env, after) = tls_client(&target, &second.ca.cert_pem(), None);
    assert!(served(&after), "a failed reload stopped the endpoint");
    let metrics = http(sidecar.health_addr(), "GET", "/metrics")
        .expect("metrics")
        .1;
    assert!(
        metrics.contains("gpu_sidecar_tls_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gpu_sidecar_tls_reloads_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );

    // The open Watch saw no end until the sidecar drains.
    sidecar.signal(libc::SIGTERM);
    let deadline = Instant::now() + PATIENCE;
    let mut last = first_status.status;
    while let Some(Ok(update)) = futures_executor::block_on(watch.next()) {
        last = update.status;
        assert!(Instant::now() < deadline, "Watch did not end after SIGTERM");
    }
    assert_eq!(
        last,
        ServingStatus::NOT_SERVING.into(),
        "the open call ended before the drain"
    );
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
}

#[test]
fn tls_files_that_cannot_be_used_exit_2_naming_their_key() {
    let dir = TestDir::new();
    dir.write_model("model.bin", 4096);
    let pki = Pki::new(dir.path(), "one");
    let other = Pki::new(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    fs::write(&garbage, b"-----BEGIN NOTHING-----\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let cases: [(String, &str, &str); 5] = [
        (
            tls_table(&missing, &pki.key_file, None),
            "`sidecar.rpc.tls.cert-file`",
            "cannot read",
        ),
        (
            tls_table(&garbage, &pki.key_file, None),
            "`sidecar.rpc.tls.cert-file`",
            "holds no PEM certificate",
        ),
        (
            tls_table(&pki.cert_file, &garbage, None),
            "`sidecar.rpc.tls.key-file`",
            "holds no unencrypted PEM private key",
        ),
        (
            tls_table(&pki.cert_file, &other.key_file, None),
            "`sidecar.rpc.tls.key-file`",
            "is not the private key of the certificate",
        ),
        (
            tls_table(&pki.cert_file, &pki.key_file, Some(&missing)),
            "`sidecar.rpc.tls.client-ca-file`",
            "cannot read",
        ),
    ];
    for (table, key, why) in cases {
        let mut config = ConfigText::new(&dir);
        config.endpoint = "127.0.0.1:0".to_string();
        config.rpc_extra = table;
        let log = expect_exit(2, &dir, &config.render(), &[]);
        assert!(
            log.contains(key) && log.contains(why),
            "{key}, {why}:\n{log}"
        );
    }
    // On a Unix socket: refused, the socket's mode guards it.
    let mut config = ConfigText::new(&dir);
    config.rpc_extra = tls_table(&pki.cert_file, &pki.key_file, None);
    let log = expect_exit(2, &dir, &config.render(), &[]);
    assert!(
        log.contains("`sidecar.rpc.tls`: applies only to TCP endpoints"),
        "{log}"
    );
}

#[test]
fn tritons_python_client_works_unmodified_with_ssl() {
    for client_certificates in [false, true] {
        let dir = TestDir::new();
        dir.copy_fixture("simple", "simple.onnx");
        let pki = Pki::new(dir.path(), "one");
        let client_ca = client_certificates.then_some(pki.ca_file.as_path());
        let (sidecar, _target) = tls_sidecar_on(
            &dir,
            "simple.onnx",
            &tls_table(&pki.cert_file, &pki.key_file, client_ca),
        );
        let ca = pki.ca_file.display().to_string();
        let mut args = vec![ca];
        if client_certificates {
            let client = issue("python client", Some(&pki.ca), false);
            let (cert, key) = client.write(dir.path(), "client");
            args.push(cert.display().to_string());
            args.push(key.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::examples::python_check("tls_check.py", &sidecar, &args, "tls check passed");
    }
}

#[test]
fn a_certificate_near_its_end_is_logged_with_what_to_do() {
    let dir = TestDir::new();
    let ca = issue("short CA", None, true);
    let server = issue_for_days("gpu-sidecar", Some(&ca), false, 1);
    let (cert, key) = server.write(dir.path(), "short");
    let (sidecar, target) = tls_sidecar(&dir, &tls_table(&cert, &key, None));
    let line = sidecar.wait_for_log("(sidecar.rpc.tls.cert-file) expires in");
    assert!(line.contains("renew it, then send SIGHUP"), "{line}");
    // It serves on: a renewal may be on its way.
    let (_env, client) = tls_client(&target, &ca.cert_pem(), None);
    assert!(served(&client), "{}", sidecar.log());
}
