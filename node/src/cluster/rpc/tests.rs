//! In-process tests of the RPC over real loopback sockets: multiplexing, failure speed, reconnection, timeouts,
//! size limits and mutual TLS.

use super::*;
use futures::FutureExt;
use idp_proto::rpc::{Frame, FrameError, PREAMBLE};
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LONG: Duration = Duration::from_secs(10);

/// Answers by operation name, so that each test picks a behaviour per call:
/// `echo` replies `op:shard:body` after a random delay of up to 20 ms, `slow` after 2 s, `hang` never,
/// `big` with a body over the frame limit, `panic` panics; shard 13 is not owned here.
#[derive(Default)]
struct TestHandler {
    started: AtomicUsize,
}

impl RpcHandler for TestHandler {
    fn handle(&self, call: RpcCall) -> BoxFuture<'static, RpcReply> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let RpcCall::Shard { shard, op, body } = call else {
            return async { RpcReply::Error("ping reached the handler".into()) }.boxed();
        };
        if shard == 13 {
            return async { RpcReply::NotOwner }.boxed();
        }
        async move {
            match op.as_str() {
                "echo" => {
                    let delay = rand::rng().random_range(0..20);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                "slow" => tokio::time::sleep(Duration::from_secs(2)).await,
                "hang" => futures::future::pending::<()>().await,
                "big" => return RpcReply::Shard(vec![0; MAX_FRAME_LEN]),
                "panic" => panic!("test handler panics on purpose"),
                "fast" => {}
                other => return RpcReply::Error(format!("unknown op {other}")),
            }
            RpcReply::Shard([format!("{op}:{shard}:").as_bytes(), &body].concat())
        }
        .boxed()
    }
}

fn shard_call(op: &str, body: &[u8]) -> RpcCall {
    RpcCall::Shard { shard: 7, op: op.into(), body: body.to_vec() }
}

fn echoed(op: &str, body: &[u8]) -> RpcReply {
    RpcReply::Shard([format!("{op}:7:").as_bytes(), body].concat())
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

async fn start_plain() -> (RpcServer, Arc<TestHandler>, String) {
    let handler = Arc::new(TestHandler::default());
    let server = RpcServer::start(loopback().await, None, handler.clone());
    let peer = server.local_addr().to_string();
    (server, handler, peer)
}

/// Polls `predicate` every 5 ms until it holds; panics after `limit`.
async fn wait_for(what: &str, limit: Duration, mut predicate: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !predicate() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Spawns `count` calls of `op` and returns their handles.
fn spawn_calls(
    client: &RpcClient,
    peer: &str,
    op: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<RpcReply, RpcError>>> {
    (0..count)
        .map(|index| {
            let (client, peer, call) = (client.clone(), peer.to_owned(), shard_call(op, &index.to_be_bytes()));
            tokio::spawn(async move { client.call(&peer, call, LONG).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_one_connection_get_their_own_replies() {
    let (server, _handler, peer) = start_plain().await;
    let client = RpcClient::new(None);
    let calls = (0..500u32).map(|index| {
        let (client, peer) = (client.clone(), peer.clone());
        async move {
            let body = format!("call number {index}").into_bytes();
            let reply = client.call(&peer, shard_call("echo", &body), LONG).await.unwrap();
            assert_eq!(reply, echoed("echo", &body));
        }
    });
    futures::future::join_all(calls).await;
    assert_eq!(server.accepted_connections(), 1, "all calls share one connection");
    assert!(client.is_connected(&peer));
}

#[tokio::test]
async fn ping_not_owner_and_errors_come_back() {
    let (server, handler, peer) = start_plain().await;
    let client = RpcClient::new(None);
    assert_eq!(client.call(&peer, RpcCall::Ping, LONG).await, Ok(RpcReply::Pong));
    assert_eq!(handler.started.load(Ordering::SeqCst), 0, "ping is answered by the server");
    let not_owned = RpcCall::Shard { shard: 13, op: "echo".into(), body: Vec::new() };
    assert_eq!(client.call(&peer, not_owned, LONG).await, Ok(RpcReply::NotOwner));
    let unknown = client.call(&peer, shard_call("nope", b""), LONG).await;
    assert_eq!(unknown, Ok(RpcReply::Error("unknown op nope".into())));
    let empty = RpcCall::Shard { shard: 0, op: "fast".into(), body: Vec::new() };
    assert_eq!(client.call(&peer, empty, LONG).await, Ok(RpcReply::Shard(b"fast:0:".to_vec())));
    server.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_panics_answers_an_error() {
    let (_server, _handler, peer) = start_plain().await;
    let client = RpcClient::new(None);
    let started = Instant::now();
    let reply = client.call(&peer, shard_call("panic", b""), LONG).await;
    assert_eq!(reply, Ok(RpcReply::Error("handler failed".into())));
    assert!(started.elapsed() < LONG / 2, "answered at the call's timeout, not at once: {:?}", started.elapsed());
    assert_eq!(client.call(&peer, shard_call("fast", b"x"), LONG).await, Ok(echoed("fast", b"x")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_calls_in_flight_at_once() {
    let (server, handler, peer) = start_plain().await;
    let client = RpcClient::new(None);
    let calls = spawn_calls(&client, &peer, "hang", 20);
    wait_for("the calls to reach the handler", LONG, || handler.started.load(Ordering::SeqCst) == 20).await;
    let killed = Instant::now();
    drop(server);
    for call in calls {
        assert_eq!(call.await.unwrap(), Err(RpcError::Closed));
    }
    assert!(killed.elapsed() < LONG / 2, "failed after {:?}, at the call's timeout", killed.elapsed());
    wait_for("the client to notice", LONG, || !client.is_connected(&peer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_fails_calls_in_flight_at_once() {
    // A fake server that completes the preamble, reads the calls, and drops the socket.
    let listener = loopback().await;
    let peer = listener.local_addr().unwrap().to_string();
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut preamble = [0; PREAMBLE.len()];
        socket.read_exact(&mut preamble).await.unwrap();
        socket.write_all(&PREAMBLE).await.unwrap();
        let (mut received, mut frames) = (Vec::new(), 0);
        while frames < 10 {
            let mut chunk = [0; 4096];
            let read = socket.read(&mut chunk).await.unwrap();
            received.extend_from_slice(&chunk[..read]);
            while let Some((_, used)) = Frame::parse(&received).unwrap() {
                received.drain(..used);
                frames += 1;
            }
        }
        drop(socket);
        dropped_tx.send(Instant::now()).unwrap();
    });
    let client = RpcClient::new(None);
    let calls = spawn_calls(&client, &peer, "anything", 10);
    let dropped = dropped_rx.await.unwrap();
    for call in calls {
        assert_eq!(call.await.unwrap(), Err(RpcError::Closed));
    }
    assert!(dropped.elapsed() < LONG / 2, "failed after {:?}, at the call's timeout", dropped.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_peer_that_stopped_reading_fail_once_the_backlog_is_too_large() {
    // A fake server that completes the preamble, then never reads again: its socket buffers fill up.
    let listener = loopback().await;
    let peer = listener.local_addr().unwrap().to_string();
    let stalled = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut preamble = [0; PREAMBLE.len()];
        socket.read_exact(&mut preamble).await.unwrap();
        socket.write_all(&PREAMBLE).await.unwrap();
        futures::future::pending::<()>().await;
        drop(socket);
    });
    let client = RpcClient::new(None);
    let started = Instant::now();
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let (client, peer) = (client.clone(), peer.clone());
            tokio::spawn(async move { client.call(&peer, shard_call("echo", &vec![0; 1024 * 1024]), LONG).await })
        })
        .collect();
    // Calls queued on the connection fail with Closed when it is given up; calls that came after try a new one,
    // which the fake server never answers.
    let mut closed = 0;
    for call in calls {
        match call.await.unwrap() {
            Err(RpcError::Closed) => closed += 1,
            Err(RpcError::Connect(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(closed > 0);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    stalled.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_finishes_calls_in_flight_then_refuses() {
    let (server, handler, peer) = start_plain().await;
    let client = RpcClient::new(None);
    let calls = spawn_calls(&client, &peer, "slow", 10);
    wait_for("the calls to reach the handler", LONG, || handler.started.load(Ordering::SeqCst) == 10).await;
    server.shutdown().await;
    for (index, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), Ok(echoed("slow", &index.to_be_bytes())));
    }
    // The server closed the connection once the last answer was out; the client sees it asynchronously.
    wait_for("the client to see the connection close", LONG, || !client.is_connected(&peer)).await;
    let started = Instant::now();
    let after = client.call(&peer, RpcCall::Ping, LONG).await;
    assert!(matches!(after, Err(RpcError::Connect(_))), "{after:?}");
    assert!(started.elapsed() < LONG / 2, "refused at the call's timeout, not at once: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_port_nobody_listens_on_fails_fast() {
    let peer = loopback().await.local_addr().unwrap().to_string(); // the listener is dropped at once
    let client = RpcClient::new(None);
    let started = Instant::now();
    let error = client.call(&peer, RpcCall::Ping, LONG).await.unwrap_err();
    assert!(matches!(&error, RpcError::Connect(message) if message.contains(&peer)), "{error}");
    assert!(started.elapsed() < LONG / 2, "refused at the call's timeout, not at once: {:?}", started.elapsed());
    assert!(!client.is_connected(&peer));
}

#[tokio::test]
async fn a_peer_that_accepts_but_never_answers_fails_at_the_connect_timeout() {
    // The kernel completes TCP handshakes into the backlog, like for a stopped process; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = silent.local_addr().unwrap().to_string();
    let client = RpcClient::with_connect_timeout(None, Duration::from_millis(300));
    let started = Instant::now();
    let error = client.call(&peer, RpcCall::Ping, LONG).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(&error, RpcError::Connect(message) if message.contains("within 300 ms")), "{error}");
    assert!(elapsed >= Duration::from_millis(300) && elapsed < LONG / 2, "took {elapsed:?}");
}

#[tokio::test]
async fn concurrent_callers_share_one_connect_attempt() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = silent.local_addr().unwrap().to_string();
    let client = RpcClient::with_connect_timeout(None, Duration::from_millis(200));
    let started = Instant::now();
    let calls = spawn_calls(&client, &peer, "echo", 50);
    for call in calls {
        assert!(matches!(call.await.unwrap(), Err(RpcError::Connect(_))));
    }
    // One at a time, 50 attempts of 200 ms would take 10 s.
    assert!(started.elapsed() < Duration::from_secs(5), "attempts were not shared: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_call_reconnects_after_the_server_restarts_on_the_same_port() {
    let (server, _handler, peer) = start_plain().await;
    let address = server.local_addr();
    let client = RpcClient::new(None);
    assert_eq!(client.call(&peer, RpcCall::Ping, LONG).await, Ok(RpcReply::Pong));
    server.shutdown().await;
    wait_for("the client to see the connection close", LONG, || !client.is_connected(&peer)).await;
    assert!(matches!(client.call(&peer, RpcCall::Ping, LONG).await, Err(RpcError::Connect(_))));

    let restarted = RpcServer::start(TcpListener::bind(address).await.unwrap(), None, Arc::new(TestHandler::default()));
    assert_eq!(client.call(&peer, RpcCall::Ping, LONG).await, Ok(RpcReply::Pong));
    assert_eq!(client.call(&peer, shard_call("fast", b"again"), LONG).await, Ok(echoed("fast", b"again")));
    assert_eq!(restarted.accepted_connections(), 1);
}

#[tokio::test]
async fn a_call_past_its_timeout_fails_and_the_connection_stays_usable() {
    let (server, _handler, peer) = start_plain().await;
    let client = RpcClient::new(None);
    let started = Instant::now();
    let slow = client.call(&peer, shard_call("slow", b""), Duration::from_millis(100)).await;
    assert_eq!(slow, Err(RpcError::Timeout));
    let elapsed = started.elapsed();
    // The handler answers after 2 s: the Timeout above already shows that the call did not wait for it.
    assert!(elapsed >= Duration::from_millis(100), "took {elapsed:?}");
    assert_eq!(client.call(&peer, shard_call("fast", b"next"), LONG).await, Ok(echoed("fast", b"next")));
    assert_eq!(server.accepted_connections(), 1);
}

#[tokio::test]
async fn forget_closes_the_connection_and_the_next_call_opens_another() {
    let (server, handler, peer) = start_plain().await;
    let client = RpcClient::new(None);
    let calls = spawn_calls(&client, &peer, "hang", 3);
    wait_for("the calls to reach the handler", LONG, || handler.started.load(Ordering::SeqCst) == 3).await;
    client.forget(&peer);
    for call in calls {
        assert_eq!(call.await.unwrap(), Err(RpcError::Closed));
    }
    assert_eq!(client.call(&peer, RpcCall::Ping, LONG).await, Ok(RpcReply::Pong));
    assert_eq!(server.accepted_connections(), 2);
}

#[tokio::test]
async fn oversize_calls_and_replies_are_refused_without_harm() {
    let (server, _handler, peer) = start_plain().await;
    let client = RpcClient::new(None);
    let too_big = shard_call("echo", &vec![0; MAX_FRAME_LEN]);
    let refused = client.call(&peer, too_big, LONG).await;
    assert!(matches!(refused, Err(RpcError::Encode(FrameError::TooLarge { .. }))), "{refused:?}");

    let big_reply = client.call(&peer, shard_call("big", b""), LONG).await.unwrap();
    assert!(matches!(&big_reply, RpcReply::Error(message) if message.contains("exceeds the limit")), "{big_reply:?}");
    assert_eq!(client.call(&peer, shard_call("fast", b"ok"), LONG).await, Ok(echoed("fast", b"ok")));
    assert_eq!(server.accepted_connections(), 1, "neither closed the connection");
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_only_its_connection() {
    let (server, _handler, peer) = start_plain().await;
    let mut raw = TcpStream::connect(&peer).await.unwrap();
    raw.write_all(&PREAMBLE).await.unwrap();
    let mut preamble = [0; PREAMBLE.len()];
    raw.read_exact(&mut preamble).await.unwrap();
    raw.write_all(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(LONG, raw.read_to_end(&mut rest)).await.expect("the server closes it");
    assert!(closed.is_err() || rest.is_empty(), "nothing is answered to an oversize frame");

    // A garbage preamble is refused too.
    let mut http = TcpStream::connect(&peer).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(LONG, http.read_to_end(&mut answer)).await.expect("the server closes it");
    assert_eq!(answer, PREAMBLE, "only the server's own preamble was sent");

    let client = RpcClient::new(None);
    assert_eq!(client.call(&peer, RpcCall::Ping, LONG).await, Ok(RpcReply::Pong));
    assert_eq!(server.accepted_connections(), 3);
}

/// Certificates written to a folder of their own, removed when dropped.
struct Pki {
    folder: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Self {
        let folder = std::env::temp_dir().join(format!("idp-rpc-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        Self { folder }
    }

    fn ca(&self, name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(self.folder.join(format!("{name}.pem")), ca.pem()).unwrap();
        ca
    }

    /// A node certificate for `address` from `ca`; returns the node's (server, client) TLS configs, with `ca_name`'s
    /// file as the trusted CA.
    fn node(
        &self,
        node: &str,
        address: &str,
        ca: &CertifiedIssuer<'static, KeyPair>,
        trusted_ca: &str,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![address.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, ca).unwrap();
        let (cert_path, key_path) = (self.folder.join(format!("{node}.pem")), self.folder.join(format!("{node}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        cluster_tls(&cert_path, &key_path, &self.folder.join(format!("{trusted_ca}.pem"))).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

async fn start_tls(server_tls: Arc<rustls::ServerConfig>) -> (RpcServer, String) {
    let server = RpcServer::start(loopback().await, Some(server_tls), Arc::new(TestHandler::default()));
    let peer = server.local_addr().to_string();
    (server, peer)
}

/// The call fails fast at connect time, with `reason` in the message.
async fn assert_refused(client: &RpcClient, peer: &str, reason: &str) {
    let started = Instant::now();
    let outcome = client.call(peer, RpcCall::Ping, LONG).await;
    assert!(matches!(&outcome, Err(RpcError::Connect(message)) if message.contains(reason)), "{outcome:?}");
    assert!(started.elapsed() < LONG / 2, "refused at the call's timeout, not at once: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_certificates_of_the_cluster_ca_works() {
    let pki = Pki::new("good");
    let ca = pki.ca("ca");
    let (server_tls, _) = pki.node("node-1", "127.0.0.1", &ca, "ca");
    let (_, client_tls) = pki.node("node-2", "127.0.0.2", &ca, "ca");
    let (server, peer) = start_tls(server_tls).await;
    let client = RpcClient::new(Some(client_tls));
    assert_eq!(client.call(&peer, RpcCall::Ping, LONG).await, Ok(RpcReply::Pong));
    let calls = spawn_calls(&client, &peer, "echo", 200);
    for (index, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), Ok(echoed("echo", &index.to_be_bytes())));
    }
    assert_eq!(server.accepted_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let pki = Pki::new("anonymous");
    let ca = pki.ca("ca");
    let (server_tls, _) = pki.node("node-1", "127.0.0.1", &ca, "ca");
    let (server, peer) = start_tls(server_tls).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let anonymous =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    assert_refused(&RpcClient::new(Some(Arc::new(anonymous))), &peer, "CertificateRequired").await;
    assert_refused(&RpcClient::new(None), &peer, "early eof").await; // plain TCP against a TLS server
    let (_, good_tls) = pki.node("node-2", "127.0.0.2", &ca, "ca");
    assert_eq!(RpcClient::new(Some(good_tls)).call(&peer, RpcCall::Ping, LONG).await, Ok(RpcReply::Pong));
    assert_eq!(server.accepted_connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("foreign-client");
    let (ca, other_ca) = (pki.ca("ca"), pki.ca("other-ca"));
    let (server_tls, _) = pki.node("node-1", "127.0.0.1", &ca, "ca");
    let (_, foreign_tls) = pki.node("intruder", "127.0.0.2", &other_ca, "ca"); // trusts our CA, signed by another
    let (_server, peer) = start_tls(server_tls).await;
    assert_refused(&RpcClient::new(Some(foreign_tls)), &peer, "UnknownCA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_or_for_another_address_is_refused() {
    let pki = Pki::new("foreign-server");
    let (ca, other_ca) = (pki.ca("ca"), pki.ca("other-ca"));
    let (_, client_tls) = pki.node("node-2", "127.0.0.2", &ca, "ca");
    let client = RpcClient::new(Some(client_tls));

    let (impostor_tls, _) = pki.node("impostor", "127.0.0.1", &other_ca, "other-ca");
    let (_impostor, peer) = start_tls(impostor_tls).await;
    assert_refused(&client, &peer, "UnknownIssuer").await;

    let (misnamed_tls, _) = pki.node("misnamed", "127.0.0.3", &ca, "ca");
    let (_misnamed, peer) = start_tls(misnamed_tls).await;
    assert_refused(&client, &peer, "not valid for name").await;
}

/// Calls per second and latency percentiles with one caller for 1 s then 64 concurrent callers for 2 s, plain and
/// TLS, all on one connection. Run with
/// `cargo test -p idp-node --lib rpc::tests::throughput -- --ignored --nocapture`.
#[ignore]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput() {
    let pki = Pki::new("throughput");
    let ca = pki.ca("ca");
    let (server_tls, _) = pki.node("node-1", "127.0.0.1", &ca, "ca");
    let (_, client_tls) = pki.node("node-2", "127.0.0.2", &ca, "ca");
    for (label, server_tls, client_tls) in [("plain", None, None), ("tls", Some(server_tls), Some(client_tls))] {
        let server = RpcServer::start(loopback().await, server_tls, Arc::new(TestHandler::default()));
        let client = RpcClient::new(client_tls);
        let peer = server.local_addr().to_string();
        client.call(&peer, RpcCall::Ping, LONG).await.unwrap();
        for (callers, duration) in [(1, Duration::from_secs(1)), (64, Duration::from_secs(2))] {
            let (calls, elapsed, mut latencies) = measure(&client, &peer, callers, duration).await;
            latencies.sort();
            let percentile = |p: usize| latencies[latencies.len() * p / 100];
            println!(
                "rpc {label}, {callers} callers: {calls} calls in {elapsed:.2?} = {:.0} calls/s, p50 {:?}, p99 {:?}",
                calls as f64 / elapsed.as_secs_f64(),
                percentile(50),
                percentile(99),
            );
        }
        assert_eq!(server.accepted_connections(), 1);
        server.shutdown().await;
    }
}

/// Runs `callers` loops of 200-byte `fast` calls for `duration`; returns the count, the time and every latency.
async fn measure(
    client: &RpcClient,
    peer: &str,
    callers: usize,
    duration: Duration,
) -> (usize, Duration, Vec<Duration>) {
    let started = Instant::now();
    let deadline = started + duration;
    let loops = (0..callers).map(|_| {
        let (client, peer) = (client.clone(), peer.to_owned());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let body = vec![b'x'; 200];
            while Instant::now() < deadline {
                let call_started = Instant::now();
                let reply = client.call(&peer, shard_call("fast", &body), LONG).await.unwrap();
                latencies.push(call_started.elapsed());
                assert!(matches!(reply, RpcReply::Shard(_)));
            }
            latencies
        })
    });
    let latencies: Vec<Duration> =
        futures::future::join_all(loops).await.into_iter().flat_map(Result::unwrap).collect();
    (latencies.len(), started.elapsed(), latencies)
}

#[tokio::test]
async fn outgoing_connections_leave_from_the_source_ip_of_the_node() {
    // Each node of a proxied test cluster has its own loopback address; a proxy knows the caller by it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = listener.local_addr().unwrap().to_string();
    let accepted = tokio::task::spawn_blocking(move || listener.accept().map(|(_, from)| from.ip()));
    let source: std::net::IpAddr = "127.0.0.7".parse().unwrap();
    let client = RpcClient::with_connect_timeout(None, Duration::from_millis(300)).with_source_ip(source);
    let _ = client.call(&peer, RpcCall::Ping, LONG).await;
    assert_eq!(accepted.await.unwrap().unwrap(), source);
}

/// Answers a traced call with the request id it carried, an untraced one with `untraced`.
struct RequestIdHandler;

impl RpcHandler for RequestIdHandler {
    fn handle(&self, call: RpcCall) -> BoxFuture<'static, RpcReply> {
        let answer = match call {
            RpcCall::TracedShard { request_id, .. } => request_id.into_bytes(),
            _ => b"untraced".to_vec(),
        };
        async move { RpcReply::Shard(answer) }.boxed()
    }
}

fn traced_call(request_id: &str) -> RpcCall {
    RpcCall::TracedShard { request_id: request_id.into(), shard: 7, op: "echo".into(), body: b"{}".to_vec() }
}

/// Version 2: the request id of a traced call reaches the owner's handler, so its logs carry the same id.
#[tokio::test]
async fn a_traced_call_carries_its_request_id_to_the_handler() {
    let server = RpcServer::start(loopback().await, None, Arc::new(RequestIdHandler));
    let peer = server.local_addr().to_string();
    let client = RpcClient::new(None);
    assert_eq!(client.call(&peer, traced_call("req-42"), LONG).await, Ok(RpcReply::Shard(b"req-42".to_vec())));
    assert_eq!(client.call(&peer, shard_call("echo", b""), LONG).await, Ok(RpcReply::Shard(b"untraced".to_vec())));
}

/// A version-1 client (preamble version 1, plain shard calls) is served by a version-2 server.
#[tokio::test]
async fn a_version_one_client_is_answered_in_version_one() {
    let (_server, _handler, peer) = start_plain().await;
    let mut raw = TcpStream::connect(&peer).await.unwrap();
    raw.write_all(&PREAMBLE).await.unwrap();
    let mut answer = [0; PREAMBLE.len()];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, PREAMBLE, "the server answers in the client's version");
    let mut frame = Vec::new();
    Frame::Call { id: 1, call: shard_call("fast", b"x") }.encode(&mut frame).unwrap();
    raw.write_all(&frame).await.unwrap();
    let mut received = Vec::new();
    let reply = loop {
        let mut chunk = [0; 1024];
        let read = raw.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the server closed the connection");
        received.extend_from_slice(&chunk[..read]);
        if let Some((frame, _)) = Frame::parse(&received).unwrap() {
            break frame;
        }
    };
    assert_eq!(reply, Frame::Reply { id: 1, reply: echoed("fast", b"x") });
}

/// Rolling restart: a version-1 server sends its preamble without reading the client's and closes on a version-2
/// one. The client remembers the peer's version, reconnects offering version 1, and sends its calls untraced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_one_server_gets_untraced_calls_after_one_refused_connection() {
    let listener = loopback().await;
    let peer = listener.local_addr().unwrap().to_string();
    let old_server = tokio::spawn(async move {
        let mut offers = Vec::new();
        for _ in 0..2 {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(&PREAMBLE).await.unwrap();
            let mut offer = [0; PREAMBLE.len()];
            socket.read_exact(&mut offer).await.unwrap();
            offers.push(offer);
            if offer != PREAMBLE {
                continue; // a version-1 server refuses (closes) any other preamble
            }
            let mut received = Vec::new();
            let (frame, _) = loop {
                let mut chunk = [0; 4096];
                let read = socket.read(&mut chunk).await.unwrap();
                received.extend_from_slice(&chunk[..read]);
                if let Some(parsed) = Frame::parse(&received).unwrap() {
                    break parsed;
                }
            };
            let Frame::Call { id, call } = frame else { panic!("a call expected") };
            assert!(matches!(call, RpcCall::Shard { .. }), "a version-1 peer gets plain shard calls: {call:?}");
            let mut reply = Vec::new();
            Frame::Reply { id, reply: RpcReply::Shard(b"old".to_vec()) }.encode(&mut reply).unwrap();
            socket.write_all(&reply).await.unwrap();
            let _ = socket.read(&mut [0; 16]).await;
        }
        offers
    });
    let client = RpcClient::new(None);
    // The first connection offers version 2 and is refused. The first call fails with it, or, when the refusal
    // came before the call was written, is sent again over the version-1 connection that follows.
    let first = client.call(&peer, traced_call("req-1"), LONG).await;
    let old = Ok(RpcReply::Shard(b"old".to_vec()));
    if first != old {
        assert!(first.is_err(), "the first call failed or was answered by the old server: {first:?}");
        let second = client.call(&peer, traced_call("req-2"), LONG).await;
        assert_eq!(second, old);
    }
    client.forget(&peer);
    let offers = tokio::time::timeout(LONG, old_server).await.expect("the old server finished").unwrap();
    assert_eq!(offers, vec![idp_proto::rpc::PREAMBLE_V2, PREAMBLE]);
}
