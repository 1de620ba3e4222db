//! Federation steps: an upstream OpenID provider (`idp serve` with one client for the broker and one user), and
//! a browser driven through the broker and the upstream.

use super::PLACEMENT_TRIES;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idp_cluster_tests::browser::REDIRECT_URI;
use idp_cluster_tests::harness::config::{CLIENT_ID, PASSWORD};
use idp_cluster_tests::harness::process::Process;
use idp_cluster_tests::harness::{wait_for, Cluster};
use std::time::Duration;

/// The upstream provider's process (killed on drop) and its URL.
pub struct Upstream {
    pub url: String,
    _process: Process,
}

/// A browser: its own cookie jar, no redirects followed.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// `idp serve` on `port` as an upstream provider: client `broker` for the cluster's callback, user `ext-user`.
pub async fn must_start_upstream(cluster: &Cluster, port: u16) -> Upstream {
    let url = format!("http://127.0.0.1:{port}");
    let hash = idp_cluster_tests::harness::cluster::hash_password(
        &idp_cluster_tests::harness::cluster::idp_binary().unwrap(),
        PASSWORD,
    )
    .unwrap();
    let config = format!(
        "issuer = \"{url}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
         [[clients]]\nclient_id = \"broker\"\nclient_secret = \"broker-secret\"\nfirst_party = true\n\
         redirect_uris = [\"{}/federation/up/callback\"]\n\
         [[users]]\nusername = \"ext-user\"\npassword_hash = \"{hash}\"\nemail = \"ext@example.com\"\nemail_verified = true\n",
        cluster.issuer()
    );
    let path = cluster.dir().join("upstream.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = cluster.idp_command();
    command.env_remove("IDP_KEK").arg("serve").arg("--config").arg(&path);
    let process = Process::spawn("upstream", command, &cluster.dir().join("upstream.log")).expect("upstream starts");
    let http = browser();
    let discovery = format!("{url}/.well-known/openid-configuration");
    wait_for("the upstream answers", Duration::from_secs(30), || {
        let (http, discovery) = (&http, &discovery);
        async move { http.get(discovery).send().await.ok().filter(|answer| answer.status() == 200).map(|_| ()) }
    })
    .await
    .expect("the upstream provider starts");
    Upstream { url, _process: process }
}

/// `/authorize` with `idp_hint=up` on each node in turn until the upstream-login record (the `state` sent to the
/// upstream) lands in the serving node's own shards: the node, the upstream URL, and the PKCE verifier.
pub async fn must_redirect_owned_by_its_node(cluster: &Cluster, broker: &reqwest::Client) -> (usize, String, String) {
    for attempt in 0..PLACEMENT_TRIES {
        let node = attempt % cluster.len();
        let verifier = URL_SAFE_NO_PAD.encode(rand_bytes());
        let challenge =
            URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email")
            .append_pair("state", "rp-state")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("idp_hint", "up")
            .finish();
        let answer = broker.get(format!("{}/authorize?{query}", cluster.url(node))).send().await.expect("authorize");
        assert_eq!(answer.status(), 303, "idp_hint redirects to the upstream");
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        let state = url::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(name, _)| name == "state")
            .map(|(_, value)| value.into_owned())
            .expect("a state");
        if cluster.owner_of_handle(&state).expect("lease of the state's shard") == Some(node) {
            return (node, location, verifier);
        }
    }
    panic!("no upstream login landed in its own node's shards after {PLACEMENT_TRIES} tries");
}

/// Signs `ext-user` in at the upstream from its authorization URL: the upstream's redirect to the callback.
pub async fn must_sign_in_upstream(upstream: &Upstream, to_upstream: &str) -> String {
    let http = browser();
    let page = http.get(to_upstream).send().await.expect("the upstream's login page");
    let html = page.text().await.unwrap();
    let (pending, csrf) = (input(&html, "pending"), input(&html, "csrf"));
    let form = [("username", "ext-user"), ("password", PASSWORD), ("pending", &pending), ("csrf", &csrf)];
    let posted = http.post(format!("{}/login", upstream.url)).form(&form).send().await.expect("login");
    assert_eq!(posted.status(), 303);
    let resume = posted.headers()["location"].to_str().unwrap().to_string();
    let answered = http.get(&resume).send().await.expect("resume");
    assert_eq!(answered.status(), 303);
    answered.headers()["location"].to_str().unwrap().to_string()
}

fn input(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\"");
    let tag = html.split('<').find(|tag| tag.starts_with("input") && tag.contains(&needle)).expect("an input");
    let start = tag.find("value=\"").unwrap() + 7;
    let end = tag[start..].find('"').unwrap() + start;
    tag[start..end].replace("&#x2f;", "/").replace("&amp;", "&")
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    bytes
}
