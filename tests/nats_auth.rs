//! NATS authentication and TLS, each against a nats-server of the test's own configured that
//! way (on a free port, stopped when the test ends): token, user and password, NKey,
//! credentials file (decentralized JWT auth) and mutual TLS. A message goes through a
//! bridge connection each time; a wrong credential fails to connect without retrying and
//! without showing the secret.
#![cfg(feature = "nats")]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use bridge::adapter::{ConnectContext, Connector, TailSettings};
use bridge::address::Endpoint;
use bridge::message::Message;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// A nats-server started with `config` (its `listen` line is added), killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(config: &str, dir: tempfile::TempDir) -> Server {
        let port = support::ports::free_port();
        let file = dir.path().join("server.conf");
        std::fs::write(&file, format!("listen: 127.0.0.1:{port}\n{config}\n")).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (scripts/brokers.sh up nats installs it)");
        support::ports::wait_until_listening(port, "nats-server");
        Server {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(connection: &Value) -> Result<std::sync::Arc<dyn Connector>, String> {
    let parsed = bridge::adapter::connection_from_json(connection)?;
    parsed
        .connect(&ConnectContext::default())
        .await
        .map_err(|e| format!("{e} (retryable: {})", e.is_retryable()))
}

/// Publishes one message through the connection and reads it back from a subscription.
async fn round_trip(connection: &Value) {
    let connector = connect(connection).await.unwrap();
    let endpoint = |path: &str| Endpoint {
        connection: "n".into(),
        path: path.into(),
    };
    let mut reader = connector
        .open_tail(&endpoint("subject/auth.check"), &TailSettings::default())
        .await
        .unwrap();
    let sink = connector
        .open_sink(&endpoint("core/auth.check"))
        .await
        .unwrap();
    sink.send(&Message::new("authenticated"))
        .await
        .unwrap()
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), reader.recv())
        .await
        .expect("the message comes back")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message.body, "authenticated");
    delivery.ack.ack();
    reader.close().await;
}

/// Connecting with a wrong secret fails at once (not retryable) and never shows it.
async fn refused(connection: &Value, secret: &str) {
    let error = connect(connection)
        .await
        .err()
        .expect("a wrong credential is refused");
    assert!(error.contains("retryable: false"), "{error}");
    assert!(!error.contains(secret), "{error}");
}

#[tokio::test]
async fn token_authentication() {
    let server = Server::start(
        "authorization { token: \"Sq9-good-token\" }",
        tempfile::tempdir().unwrap(),
    );
    round_trip(&json!({"type": "nats", "url": server.url(), "token": "Sq9-good-token"})).await;
    refused(
        &json!({"type": "nats", "url": server.url(), "token": "Sq9-bad-token"}),
        "Sq9-bad-token",
    )
    .await;
}

#[tokio::test]
async fn user_and_password_authentication() {
    let server = Server::start(
        "authorization { user: bridge, password: \"Sq9-pass/?#word\" }",
        tempfile::tempdir().unwrap(),
    );
    round_trip(&json!({"type": "nats", "url": server.url(),
        "username": "bridge", "password": "Sq9-pass/?#word"}))
    .await;
    refused(
        &json!({"type": "nats", "url": server.url(), "username": "bridge", "password": "Sq9-wrong"}),
        "Sq9-wrong",
    )
    .await;
}

#[tokio::test]
async fn nkey_authentication() {
    let user = KeyPair::new_user();
    let server = Server::start(
        &format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}",
            user.public_key()
        ),
        tempfile::tempdir().unwrap(),
    );
    let seed = user.seed().unwrap();
    round_trip(&json!({"type": "nats", "url": server.url(), "nkey_seed": seed})).await;
    let stranger = KeyPair::new_user().seed().unwrap();
    refused(
        &json!({"type": "nats", "url": server.url(), "nkey_seed": stranger}),
        &stranger,
    )
    .await;
}

/// A JWT as nats-server reads them: header, claims and an ed25519 signature by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, nats: Value) -> String {
    let header = B64URL.encode(json!({"typ": "JWT", "alg": "ed25519-nkey"}).to_string());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "jti": format!("T{now}{}", subject.get(..8).unwrap_or(subject)),
        "iat": now,
        "iss": issuer.public_key(),
        "name": "bridge-test",
        "sub": subject,
        "nats": nats,
    });
    let claims = B64URL.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let signature = B64URL.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{signature}")
}

fn write_creds(dir: &Path, user_jwt: &str, seed: &str) -> std::path::PathBuf {
    let file = dir.join("bridge.creds");
    std::fs::write(
        &file,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn credentials_file_authentication() {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        json!({"type": "operator", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        json!({"limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                          "wildcards": true, "conn": -1, "leaf": -1},
               "type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
               "type": "user", "version": 2}),
    );
    let dir = tempfile::tempdir().unwrap();
    let creds = write_creds(dir.path(), &user_jwt, &user.seed().unwrap());
    let server = Server::start(
        &format!(
            "operator: {operator_jwt}\nresolver: MEMORY\nresolver_preload: {{ {}: {account_jwt} }}",
            account.public_key()
        ),
        dir,
    );
    round_trip(&json!({"type": "nats", "url": server.url(), "credentials_file": creds})).await;
    // A user signed by an account the server does not know.
    let stranger = KeyPair::new_account();
    let other = tempfile::tempdir().unwrap();
    let forged = write_creds(
        other.path(),
        &jwt(
            &stranger,
            &user.public_key(),
            json!({"type": "user", "version": 2}),
        ),
        &user.seed().unwrap(),
    );
    refused(
        &json!({"type": "nats", "url": server.url(), "credentials_file": forged}),
        &user.seed().unwrap(),
    )
    .await;
}

#[tokio::test]
async fn mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    support::certs::make_certificates(dir.path());
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let config = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}",
        file("server.pem"),
        file("server.key"),
        file("ca.pem")
    );
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let server = Server::start(&config, dir);
    round_trip(&json!({"type": "nats", "url": server.url(),
        "tls": {"ca_file": ca, "cert_file": cert, "key_file": key}}))
    .await;
    // Without the client certificate the server refuses the handshake.
    let error = connect(&json!({"type": "nats", "url": server.url(), "tls": {"ca_file": ca}}))
        .await
        .err()
        .expect("a client without a certificate is refused");
    assert!(error.contains("NATS"), "{error}");
}
