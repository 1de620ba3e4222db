//! The operations a bench worker performs against the nodes, each a real protocol exchange: browser-style logins
//! (authorize, login form, code exchange), SSO re-authorizations, client credentials, refresh rotation, userinfo,
//! introspection, discovery and JWKS. The protocol steps themselves live in [`crate::browser`].

use crate::browser::{code_of, Authorization, Browser, Rp, Tokens};
pub use crate::browser::{OpError, OpResult, REDIRECT_URI};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Login,
    Sso,
    ClientCredentials,
    Refresh,
    Userinfo,
    Introspect,
    Discovery,
    Jwks,
    Healthz,
}

impl Op {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "login" => Self::Login,
            "sso" => Self::Sso,
            "cc" => Self::ClientCredentials,
            "refresh" => Self::Refresh,
            "userinfo" => Self::Userinfo,
            "introspect" => Self::Introspect,
            "discovery" => Self::Discovery,
            "jwks" => Self::Jwks,
            "healthz" => Self::Healthz,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Sso => "sso",
            Self::ClientCredentials => "cc",
            Self::Refresh => "refresh",
            Self::Userinfo => "userinfo",
            Self::Introspect => "introspect",
            Self::Discovery => "discovery",
            Self::Jwks => "jwks",
            Self::Healthz => "healthz",
        }
    }

    /// Operations that need a logged-in user set up before the run.
    pub fn needs_login(self) -> bool {
        matches!(self, Self::Sso | Self::Refresh | Self::Userinfo | Self::Introspect)
    }
}

/// Who the workers are: the clients and users the nodes know.
#[derive(Clone, Debug)]
pub struct Workload {
    pub client_id: String,
    pub client_secret: String,
    pub user_prefix: String,
    pub user_count: usize,
    pub password: String,
    pub needs_login: bool,
    /// Bound of one attempt (one HTTP request; a login's steps each).
    pub timeout: std::time::Duration,
}

impl Workload {
    pub fn for_mix(mut self, mix: &[(Op, u32)]) -> Self {
        self.needs_login = mix.iter().any(|(op, _)| op.needs_login());
        self
    }

    /// A worker's session: its own connection pool, user, and (when needed) a login done up front.
    pub async fn session(&self, worker: usize, nodes: &[String]) -> anyhow::Result<Session> {
        let rp = Rp::new(&self.client_id, &self.client_secret, self.timeout)?;
        let username = if self.user_count == 0 {
            self.user_prefix.clone()
        } else {
            format!("{}{}", self.user_prefix, worker % self.user_count)
        };
        let mut session = Session {
            rp,
            nodes: nodes.to_vec(),
            next_node: worker,
            pinned: None,
            workload: self.clone(),
            username,
            browser: Browser::new(),
            refresh_token: None,
            access_token: None,
        };
        if self.needs_login {
            session.login(true).await.map_err(|error| anyhow::anyhow!("setup login failed: {}", error.kind()))?;
        }
        Ok(session)
    }
}

pub struct Session {
    rp: Rp,
    nodes: Vec<String>,
    next_node: usize,
    /// The node every step of the next operation goes to ([`Session::run_on`]); round-robin when unset.
    pinned: Option<String>,
    workload: Workload,
    username: String,
    /// The browser's cookies (binding and SSO session).
    browser: Browser,
    refresh_token: Option<String>,
    access_token: Option<String>,
}

impl Session {
    /// The node of the next step: the pinned one, else the next one round-robin.
    fn node(&mut self) -> String {
        if let Some(node) = &self.pinned {
            return node.clone();
        }
        self.next_node = self.next_node.wrapping_add(1);
        self.nodes[self.next_node % self.nodes.len()].clone()
    }

    /// Runs `op` with every step sent to `node` (a load balancer's choice).
    pub async fn run_on(&mut self, op: Op, node: &str) -> OpResult<()> {
        self.pinned = Some(node.to_string());
        let outcome = self.run(op).await;
        self.pinned = None;
        outcome
    }

    /// After an operation failed for good, logs in again through `node` when the operations need a login (a
    /// failed refresh may have rotated the token, or revoked the family on its retry), so that the next
    /// operations test the cluster rather than a dead token. Not counted.
    pub async fn recover(&mut self, node: &str) {
        if self.workload.needs_login {
            self.pinned = Some(node.to_string());
            let _ = self.login(true).await;
            self.pinned = None;
        }
    }

    pub async fn run(&mut self, op: Op) -> OpResult<()> {
        match op {
            Op::Login => self.login(false).await,
            Op::Sso => self.sso().await,
            Op::ClientCredentials => self.client_credentials().await,
            Op::Refresh => self.refresh().await,
            Op::Userinfo => self.userinfo().await,
            Op::Introspect => self.introspect().await,
            Op::Discovery => self.get("/.well-known/openid-configuration").await,
            Op::Jwks => self.get("/jwks").await,
            Op::Healthz => self.get("/healthz").await,
        }
    }

    async fn get(&mut self, path: &str) -> OpResult<()> {
        let node = self.node();
        self.rp.get(&node, path).await.map(|_| ())
    }

    async fn client_credentials(&mut self) -> OpResult<()> {
        let node = self.node();
        self.rp.client_credentials(&node).await.map(|_| ())
    }

    /// A full browser login: `/authorize` (form), `POST /login`, resume, code exchange.
    pub async fn login(&mut self, offline: bool) -> OpResult<()> {
        let node = self.node();
        self.browser.clear();
        let form = self.rp.login_form(&node, &mut self.browser, offline).await?;
        let code = self.rp.sign_in(&node, &mut self.browser, &form, &self.username, &self.workload.password).await?;
        let tokens = self.rp.exchange(&node, &code, &form.verifier).await?;
        self.keep_tokens(tokens);
        Ok(())
    }

    /// An SSO re-authorization: `/authorize` with the session cookie answers with a code at once; exchange it.
    async fn sso(&mut self) -> OpResult<()> {
        let node = self.node();
        let Authorization::Redirect { location, verifier } = self.rp.authorize(&node, &mut self.browser, false).await?
        else {
            return Err(OpError::Status { status: 200, error: None });
        };
        // A session holds a bounded number of live grants (512): a browser that reaches it logs in again, and
        // that login counts in this operation's latency.
        if location.contains("error=login_required") {
            return self.login(false).await;
        }
        let code = code_of(&location)?;
        let tokens = self.rp.exchange(&node, &code, &verifier).await?;
        self.keep_tokens(tokens);
        Ok(())
    }

    async fn refresh(&mut self) -> OpResult<()> {
        let node = self.node();
        let token = self.refresh_token.clone().ok_or(OpError::Protocol("no_refresh_token"))?;
        let tokens = self.rp.refresh(&node, &token).await?;
        self.keep_tokens(tokens);
        Ok(())
    }

    async fn userinfo(&mut self) -> OpResult<()> {
        let node = self.node();
        let token = self.access_token.clone().ok_or(OpError::Protocol("no_access_token"))?;
        self.rp.userinfo(&node, &token).await.map(|_| ())
    }

    async fn introspect(&mut self) -> OpResult<()> {
        let node = self.node();
        let token = self.access_token.clone().ok_or(OpError::Protocol("no_access_token"))?;
        if !self.rp.introspect(&node, &token).await? {
            return Err(OpError::Protocol("inactive"));
        }
        Ok(())
    }

    fn keep_tokens(&mut self, tokens: Tokens) {
        self.access_token = Some(tokens.access_token);
        if let Some(refresh) = tokens.refresh_token {
            self.refresh_token = Some(refresh);
        }
    }
}
