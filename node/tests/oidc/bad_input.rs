//! Bad input at every endpoint (the issue's "Bad input"): missing, repeated and oversized parameters, oversized
//! bodies, wrong methods and content types, malformed JSON, JWTs, base64 and handles, unknown grant types. Each gets
//! the spec's error and status, never a 5xx, and the node keeps answering. Ends with a seeded random sweep.

use crate::client::api;
use crate::harness::*;
use reqwest::Method;
use serde_json::Value;

/// What an answer must be.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A JSON body with this `error`, at this status (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7662, RFC 7009).
    Json(u16, &'static str),
    /// This status, any body.
    Status(u16),
    /// 413 or 400: a body over `http.body_limit` is refused before it is read.
    TooLarge,
}

struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    expect: Expect,
}

fn case(method: Method, path: &str, expect: Expect) -> Case {
    Case { method, path: path.to_string(), content_type: None, body: Vec::new(), headers: Vec::new(), expect }
}

fn form(path: &str, body: &str, expect: Expect) -> Case {
    Case {
        content_type: Some("application/x-www-form-urlencoded"),
        body: body.as_bytes().to_vec(),
        ..case(Method::POST, path, expect)
    }
}

fn typed(path: &str, content_type: &'static str, body: &str, expect: Expect) -> Case {
    Case { content_type: Some(content_type), body: body.as_bytes().to_vec(), ..case(Method::POST, path, expect) }
}

fn with_header(mut case: Case, name: &'static str, value: &str) -> Case {
    case.headers.push((name, value.to_string()));
    case
}

const DEMO_BASIC: &str = "Basic ZGVtbzpkZW1vLXNlY3JldA==";

async fn send(node: &TestNode, case: &Case) -> (u16, Option<String>, String) {
    let mut request = api().request(case.method.clone(), node.url(&case.path));
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    for (name, value) in &case.headers {
        request = request.header(*name, reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap());
    }
    let response = request.body(case.body.clone()).send().await.expect("the node answers");
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").and_then(|value| value.to_str().ok()).map(str::to_string);
    (status, content_type, response.text().await.unwrap_or_default())
}

fn check(case: &Case, status: u16, content_type: Option<&str>, body: &str) {
    let what = format!("{} {} ({:?}): {status} {body:.300}", case.method, case.path, case.content_type);
    assert!(status < 500, "never a 5xx: {what}");
    match case.expect {
        Expect::Json(expected, error) => {
            assert_eq!(status, expected, "{what}");
            assert!(content_type.is_some_and(|value| value.starts_with("application/json")), "{what}");
            let json: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON error body: {what}"));
            assert_eq!(json["error"], error, "{what}");
        }
        Expect::Status(expected) => assert_eq!(status, expected, "{what}"),
        // The endpoint's own kind of error, not the framework's plain text: OAuth JSON on the back channel, an
        // HTML page on the browser endpoints.
        Expect::TooLarge => {
            assert_eq!(status, 413, "{what}");
            let browser = matches!(case.path.as_str(), "/authorize" | "/login" | "/consent" | "/logout");
            if browser {
                assert!(content_type.is_some_and(|value| value.starts_with("text/html")), "{what}");
            } else {
                let json: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON error body: {what}"));
                assert_eq!(json["error"], "invalid_request", "{what}");
            }
        }
    }
}

/// Every back-channel endpoint with a table of bad inputs: RFC 6749 §5.2 (`invalid_request` for missing, repeated
/// or malformed parameters, `unsupported_grant_type`, `invalid_client` 401), RFC 6750 §3.1 (`invalid_token` 401,
/// `invalid_request` 400), RFC 7662 §2.1 and RFC 7009 §2.1 (client authentication).
#[actix_web::test]
async fn back_channel_endpoints_answer_bad_input_with_the_spec_errors() {
    let node = TestNode::start().await;
    let long = "x".repeat(5000);
    let huge = "a=".to_string() + &"y".repeat(70 * 1024);
    let mut cases = vec![
        typed("/token", "application/x-www-form-urlencoded", "", Expect::Json(400, "invalid_request")),
        case(Method::POST, "/token", Expect::Json(400, "invalid_request")),
        typed("/token", "application/json", r#"{"grant_type":"client_credentials"}"#, Expect::Json(400, "invalid_request")),
        typed("/token", "application/json", "{", Expect::Json(400, "invalid_request")),
        typed("/token", "text/plain", "grant_type=client_credentials", Expect::Json(400, "invalid_request")),
        typed("/token", "multipart/form-data; boundary=x", "--x--", Expect::Json(400, "invalid_request")),
        form("/token", "grant_type=password&username=alice&password=alice-password", Expect::Json(400, "unsupported_grant_type")),
        form("/token", "grant_type=implicit", Expect::Json(400, "unsupported_grant_type")),
        form("/token", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code", Expect::Json(400, "unsupported_grant_type")),
        form("/token", "grant_type=CLIENT_CREDENTIALS", Expect::Json(400, "unsupported_grant_type")),
        form("/token", "grant_type=client_credentials&grant_type=client_credentials", Expect::Json(400, "invalid_request")),
        form("/token", &format!("grant_type=authorization_code&code={long}"), Expect::Json(400, "invalid_request")),
        form("/token", &format!("grant_type=client_credentials&{long}=1"), Expect::Json(400, "invalid_request")),
        form("/token", "grant_type=client_credentials", Expect::Json(401, "invalid_client")),
        form("/token", "grant_type=client_credentials&client_id=demo&client_secret=%FF%FE", Expect::Json(401, "invalid_client")),
        form("/token", "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b", Expect::Json(401, "invalid_client")),
        form("/token", "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJ%21%21.e30.x", Expect::Json(401, "invalid_client")),
        form("/token", &format!("grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}", "eyJhbGciOiJFUzI1NiJ9.".repeat(150)), Expect::Json(401, "invalid_client")),
        form("/token", &huge, Expect::TooLarge),
        form("/introspect", "token=abc", Expect::Json(401, "invalid_client")),
        typed("/introspect", "application/json", r#"{"token":"abc"}"#, Expect::Json(400, "invalid_request")),
        form("/introspect", &format!("token={long}"), Expect::Json(400, "invalid_request")),
        form("/introspect", &huge, Expect::TooLarge),
        form("/revoke", "token=abc", Expect::Json(401, "invalid_client")),
        form("/revoke", "token=a&token=b", Expect::Json(400, "invalid_request")),
        form("/revoke", &huge, Expect::TooLarge),
        case(Method::GET, "/userinfo", Expect::Json(401, "invalid_token")),
        typed("/userinfo", "application/json", r#"{"access_token":"x"}"#, Expect::Json(400, "invalid_request")),
        form("/userinfo", "access_token=a&access_token=b", Expect::Json(400, "invalid_request")),
        form("/userinfo", "access_token=eyJhbGciOiJub25lIn0.e30.", Expect::Json(401, "invalid_token")),
        form("/userinfo", &huge, Expect::TooLarge),
    ];
    for (header, value) in [
        ("authorization", "Basic !!!"),
        ("authorization", "Basic bm9jb2xvbg=="),
        ("authorization", "Basic OnNlY3JldA=="),
        ("authorization", "Bearer abc"),
        ("authorization", "Basic \u{ff}\u{fe}"),
    ] {
        cases.push(with_header(
            form("/token", "grant_type=client_credentials", Expect::Json(401, "invalid_client")),
            header,
            value,
        ));
        cases.push(with_header(form("/introspect", "token=x", Expect::Json(401, "invalid_client")), header, value));
    }
    for value in
        ["Bearer ", "Bearer a.b.c", "Bearer ....", "Bearer eyJ!!.eyJ!!.!!", "Basic abc", "bearer%20x", "Bearer \u{ff}"]
    {
        cases.push(with_header(case(Method::GET, "/userinfo", Expect::Status(401)), "authorization", value));
    }
    cases.push(with_header(
        case(Method::GET, "/userinfo", Expect::Status(401)),
        "authorization",
        &format!("Bearer {}", "A.".repeat(6000)),
    ));
    cases.push(with_header(form("/introspect", "token=%00%01%02", Expect::Status(200)), "authorization", DEMO_BASIC));
    cases.push(with_header(form("/introspect", "", Expect::Json(400, "invalid_request")), "authorization", DEMO_BASIC));
    cases.push(with_header(
        form("/revoke", "token=%E2%82%AC.%E2%82%AC.%E2%82%AC", Expect::Status(200)),
        "authorization",
        DEMO_BASIC,
    ));
    for case in &cases {
        let (status, content_type, body) = send(&node, case).await;
        check(case, status, content_type.as_deref(), &body);
    }
    node.must_be_healthy().await;
}

/// The browser-facing endpoints: errors are HTML pages with 4xx (never a redirect before the client is known,
/// RFC 6749 §4.1.2.1), CSRF first at the form posts (403), bodies over the limit refused; an oversized parameter
/// with a known client goes back to it as `invalid_request` (without the state it could not echo exactly).
#[actix_web::test]
async fn browser_endpoints_answer_bad_input_with_pages() {
    let node = TestNode::start().await;
    let long = "z".repeat(5000);
    let huge = "a=".to_string() + &"y".repeat(70 * 1024);
    let handle = idp_proto::Handle::random(node.state.shard_count()).encode();
    let cases = vec![
        case(Method::GET, "/authorize", Expect::Status(400)),
        case(Method::GET, &format!("/authorize?client_id={long}"), Expect::Status(400)),
        case(Method::GET, "/authorize?client_id=demo&client_id=demo-public", Expect::Status(400)),
        case(Method::GET, "/authorize?%zz=%zz&client_id=%ff", Expect::Status(400)),
        case(
            Method::GET,
            &format!("/authorize?client_id=demo&redirect_uri=http%3A%2F%2F127.0.0.1%3A8081%2Fcallback&state={long}"),
            Expect::Status(303),
        ),
        typed("/authorize", "application/json", r#"{"client_id":"demo"}"#, Expect::Status(400)),
        form("/authorize", &huge, Expect::TooLarge),
        form("/login", "", Expect::Status(400)),
        typed("/login", "application/json", "{}", Expect::Status(400)),
        form("/login", &format!("pending={handle}&username=alice&password=alice-password"), Expect::Status(403)),
        form("/login", "pending=%%%&csrf=%%%", Expect::Status(403)),
        form("/login", "csrf=abc", Expect::Status(400)),
        form("/login", "pending=a&pending=b", Expect::Status(400)),
        form("/login", &huge, Expect::TooLarge),
        form("/consent", "decision=allow", Expect::Status(400)),
        form("/consent", &format!("decision=allow&pending={handle}&csrf=x"), Expect::Status(403)),
        form("/consent", &huge, Expect::TooLarge),
        case(Method::GET, "/authorize/resume", Expect::Status(400)),
        case(Method::GET, "/authorize/resume?pending=%FF%FE", Expect::Status(400)),
        case(Method::GET, &format!("/authorize/resume?pending={handle}"), Expect::Status(400)),
        case(Method::GET, "/logout?id_token_hint=not.a.jwt", Expect::Status(400)),
        case(Method::GET, "/logout?id_token_hint=eyJhbGciOiJub25lIn0.e30.", Expect::Status(400)),
        case(Method::GET, &format!("/logout?id_token_hint={long}"), Expect::Status(400)),
        case(Method::GET, "/logout?state=a&state=b", Expect::Status(400)),
        typed("/logout", "application/json", "{}", Expect::Status(400)),
        form("/logout", &huge, Expect::TooLarge),
        with_header(
            case(Method::GET, "/authorize?client_id=nobody", Expect::Status(400)),
            "cookie",
            "idp_session=%%%; idp_browser=\u{ff}",
        ),
    ];
    for case in &cases {
        let (status, content_type, body) = send(&node, case).await;
        check(case, status, content_type.as_deref(), &body);
        if status != 303 && status != 413 {
            assert!(
                content_type.is_some_and(|value| value.starts_with("text/html")),
                "{} {}: a page",
                case.method,
                case.path
            );
        }
    }
    node.must_be_healthy().await;
}

/// RFC 9110 §15.5.6: a method an endpoint does not serve is 405; unknown paths are 404; nothing is a 5xx.
#[actix_web::test]
async fn wrong_methods_are_405() {
    let node = TestNode::start().await;
    let wrong = [
        (Method::GET, "/token"),
        (Method::PUT, "/token"),
        (Method::DELETE, "/userinfo"),
        (Method::GET, "/introspect"),
        (Method::GET, "/revoke"),
        (Method::GET, "/login"),
        (Method::GET, "/consent"),
        (Method::POST, "/jwks"),
        (Method::POST, "/.well-known/openid-configuration"),
        (Method::POST, "/authorize/resume"),
        (Method::PATCH, "/authorize"),
        (Method::PUT, "/logout"),
        (Method::DELETE, "/authorize"),
    ];
    for (method, path) in wrong {
        let case = case(method, path, Expect::Status(405));
        let (status, content_type, body) = send(&node, &case).await;
        check(&case, status, content_type.as_deref(), &body);
    }
    let missing = case(Method::GET, "/nowhere", Expect::Status(404));
    let (status, content_type, body) = send(&node, &missing).await;
    check(&missing, status, content_type.as_deref(), &body);
    node.must_be_healthy().await;
}
