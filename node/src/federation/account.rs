//! From an upstream's claims to a local account, as pure functions: the claim mapping, and the linking policy
//! (by upstream subject always; by verified email only when the upstream allows it; else just-in-time
//! provisioning, or a refusal).

use crate::config::{ClaimMapping, UpstreamConfig};
use crate::directory::{Directory, StoredUser, UpstreamLink};
use serde_json::Value;

/// Who the upstream says the user is, after the claim mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// The upstream's stable id for the user (a number becomes its decimal text).
    pub subject: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
}

/// Maps upstream claims (an ID token's or a userinfo answer's JSON object); `Err` when the subject is missing.
pub fn identity_from_claims(mapping: &ClaimMapping, claims: &Value) -> Result<UpstreamIdentity, &'static str> {
    let text = |name: &str| match claims.get(name) {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    let subject = text(&mapping.subject).ok_or("the upstream's answer has no subject")?;
    let email = text(&mapping.email).filter(|email| email.contains('@'));
    let email_verified = match claims.get(&mapping.email_verified) {
        Some(Value::Bool(verified)) => *verified,
        // Some providers send it as a string (OIDC Core §5.1 says boolean).
        Some(Value::String(text)) => text == "true",
        _ => false,
    };
    Ok(UpstreamIdentity {
        subject,
        username: text(&mapping.username),
        email_verified: email_verified && email.is_some(),
        email,
        name: text(&mapping.name),
        given_name: text(&mapping.given_name),
        family_name: text(&mapping.family_name),
    })
}

/// GitHub's `/user/emails`: the primary verified address, else the first verified one, else none.
pub fn email_from_list(list: &Value) -> Option<String> {
    let entries = list.as_array()?;
    let verified = |entry: &&Value| entry.get("verified").and_then(Value::as_bool) == Some(true);
    let primary = |entry: &&Value| entry.get("primary").and_then(Value::as_bool) == Some(true);
    let chosen = entries.iter().filter(verified).find(primary).or_else(|| entries.iter().find(verified))?;
    chosen.get("email").and_then(Value::as_str).filter(|email| email.contains('@')).map(str::to_string)
}

/// What a brokered sign-in does to the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountDecision {
    /// A user is linked to this upstream account already.
    Linked { user_id: String },
    /// An existing user with this verified email gets a new link (store the entry, then sign in as it).
    LinkByEmail { user: StoredUser },
    /// A new user, with the link (store the entry, then sign in as it).
    Provision { user: StoredUser },
    /// Nobody is linked and provisioning is off.
    Refused,
}

/// The linking policy. `new_user_id` is the id a provisioned user gets (derived from the upstream and subject, so
/// that two nodes provisioning the same sign-in at once write the same entry).
pub fn decide_account(
    directory: &Directory,
    upstream: &UpstreamConfig,
    identity: &UpstreamIdentity,
    new_user_id: &str,
) -> AccountDecision {
    let link = UpstreamLink { upstream: upstream.id.clone(), subject: identity.subject.clone() };
    if let Some(user) = directory.user_by_link(&link.upstream, &link.subject) {
        // A disabled user (admin API) signs in through no upstream either.
        if user.disabled {
            return AccountDecision::Refused;
        }
        return AccountDecision::Linked { user_id: user.id.clone() };
    }
    if upstream.link_by_email && identity.email_verified {
        let found = identity.email.as_deref().and_then(|email| directory.user_by_verified_email(email));
        if let Some(user) = found {
            if user.disabled {
                return AccountDecision::Refused;
            }
            let mut entry = user.to_stored();
            entry.links.push(link);
            entry.links.sort();
            return AccountDecision::LinkByEmail { user: entry };
        }
    }
    if !upstream.provision {
        return AccountDecision::Refused;
    }
    if directory.user_entry_by_id(new_user_id).is_some_and(|user| user.disabled) {
        // Re-provisioning would enable it again.
        return AccountDecision::Refused;
    }
    if let Some(user) = directory.user_by_id(new_user_id) {
        // Provisioned earlier but the link was lost (an admin removed it): the entry gets it back.
        let mut entry = user.to_stored();
        entry.links.push(link);
        entry.links.sort();
        return AccountDecision::Provision { user: entry };
    }
    let user = StoredUser {
        id: new_user_id.to_string(),
        username: free_username(directory, upstream, identity, new_user_id),
        // No password: an empty hash never verifies, and the login form treats the user as unknown.
        password_hash: String::new(),
        email: identity.email.clone(),
        email_verified: identity.email_verified,
        name: identity.name.clone(),
        given_name: identity.given_name.clone(),
        family_name: identity.family_name.clone(),
        links: vec![link],
        disabled: false,
    };
    AccountDecision::Provision { user }
}

/// The upstream's username when it is free here, else `{upstream}-{username or subject}`, else the new id.
fn free_username(directory: &Directory, upstream: &UpstreamConfig, identity: &UpstreamIdentity, id: &str) -> String {
    let base = identity.username.clone().unwrap_or_else(|| identity.subject.clone());
    let candidates = [base.clone(), format!("{}-{base}", upstream.id)];
    candidates.into_iter().find(|name| directory.user_by_name(name).is_none()).unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn upstream(link_by_email: bool, provision: bool) -> UpstreamConfig {
        let mut upstream: UpstreamConfig = toml::from_str(
            r#"id = "acme"
kind = "oidc"
issuer = "https://login.acme.example"
client_id = "broker"
client_secret = "s""#,
        )
        .unwrap();
        (upstream.link_by_email, upstream.provision) = (link_by_email, provision);
        upstream
    }

    /// The dev directory (alice, verified alice@example.com) plus `extra` users.
    fn directory(extra: Vec<StoredUser>) -> Directory {
        let config = Config::dev("127.0.0.1:8080", None);
        let mut users: Vec<StoredUser> = config.users.iter().map(StoredUser::from_config).collect();
        users.extend(extra);
        Directory::from_entries(&[], &users, [7; 32], &config.issuer).unwrap()
    }

    fn identity(subject: &str, email: Option<&str>, verified: bool) -> UpstreamIdentity {
        UpstreamIdentity {
            subject: subject.into(),
            username: Some("alice".into()),
            email: email.map(str::to_string),
            email_verified: verified,
            name: Some("Alice Upstream".into()),
            given_name: None,
            family_name: None,
        }
    }

    #[test]
    fn claims_map_oidc_and_github_shapes() {
        let oidc = json!({"sub": "u-1", "preferred_username": "al", "email": "al@x.example", "email_verified": true});
        let mapped = identity_from_claims(&ClaimMapping::default(), &oidc).unwrap();
        assert_eq!((mapped.subject.as_str(), mapped.username.as_deref()), ("u-1", Some("al")));
        assert!(mapped.email_verified);
        let github_mapping = ClaimMapping { subject: "id".into(), username: "login".into(), ..Default::default() };
        let github = json!({"id": 583231, "login": "octocat", "email": null, "name": "The Octocat"});
        let mapped = identity_from_claims(&github_mapping, &github).unwrap();
        assert_eq!(mapped.subject, "583231", "a numeric id becomes its decimal text");
        assert_eq!((mapped.email, mapped.email_verified), (None, false));
        assert_eq!(mapped.name.as_deref(), Some("The Octocat"));
        assert!(identity_from_claims(&ClaimMapping::default(), &json!({"sub": ""})).is_err());
        assert!(identity_from_claims(&ClaimMapping::default(), &json!({"email": "a@b"})).is_err());
        let unverified = identity_from_claims(&ClaimMapping::default(), &json!({"sub": "x", "email": "a@b"})).unwrap();
        assert!(!unverified.email_verified, "an absent email_verified means unverified");
    }

    #[test]
    fn the_email_list_gives_the_primary_verified_address() {
        let list = json!([
            {"email": "old@x.example", "primary": false, "verified": true},
            {"email": "main@x.example", "primary": true, "verified": true},
        ]);
        assert_eq!(email_from_list(&list).as_deref(), Some("main@x.example"));
        let unverified_primary = json!([
            {"email": "main@x.example", "primary": true, "verified": false},
            {"email": "other@x.example", "primary": false, "verified": true},
        ]);
        assert_eq!(email_from_list(&unverified_primary).as_deref(), Some("other@x.example"));
        assert_eq!(email_from_list(&json!([{"email": "a@x", "primary": true, "verified": false}])), None);
        assert_eq!(email_from_list(&json!({"not": "a list"})), None);
    }

    #[test]
    fn a_linked_subject_signs_in_as_its_user_whatever_the_email() {
        let mut bob = StoredUser::from_config(&Config::dev("127.0.0.1:8080", None).users[0]);
        (bob.id, bob.username, bob.email) = ("bob".into(), "bob".into(), Some("bob@example.com".into()));
        bob.links = vec![UpstreamLink { upstream: "acme".into(), subject: "u-9".into() }];
        let directory = directory(vec![bob]);
        let decision = decide_account(&directory, &upstream(true, true), &identity("u-9", None, false), "new");
        assert_eq!(decision, AccountDecision::Linked { user_id: "bob".into() });
        // The same subject at another upstream is another account.
        let mut other = upstream(false, true);
        other.id = "other".into();
        let decision = decide_account(&directory, &other, &identity("u-9", None, false), "new");
        assert!(matches!(decision, AccountDecision::Provision { .. }), "{decision:?}");
    }

    #[test]
    fn email_linking_needs_the_option_and_a_verified_email() {
        let directory = directory(Vec::new());
        let verified = identity("u-1", Some("ALICE@example.com"), true);
        match decide_account(&directory, &upstream(true, true), &verified, "new") {
            AccountDecision::LinkByEmail { user } => {
                assert_eq!(user.id, "alice");
                assert_eq!(user.links, vec![UpstreamLink { upstream: "acme".into(), subject: "u-1".into() }]);
                assert!(!user.password_hash.is_empty(), "the password stays");
            }
            other => panic!("link by email expected: {other:?}"),
        }
        for (upstream, identity) in [
            (upstream(false, true), verified.clone()),
            (upstream(true, true), identity("u-1", Some("alice@example.com"), false)),
        ] {
            match decide_account(&directory, &upstream, &identity, "acme-new") {
                AccountDecision::Provision { user } => {
                    assert_eq!(user.id, "acme-new");
                    assert_eq!(user.username, "acme-alice", "alice is taken locally");
                    assert!(user.password_hash.is_empty());
                }
                other => panic!("a new account expected: {other:?}"),
            }
        }
    }

    #[test]
    fn two_users_sharing_a_verified_email_are_never_picked() {
        let mut twin = StoredUser::from_config(&Config::dev("127.0.0.1:8080", None).users[0]);
        (twin.id, twin.username) = ("twin".into(), "twin".into());
        let directory = directory(vec![twin]);
        let verified = identity("u-1", Some("alice@example.com"), true);
        let decision = decide_account(&directory, &upstream(true, true), &verified, "new");
        assert!(matches!(decision, AccountDecision::Provision { .. }), "{decision:?}");
    }

    #[test]
    fn without_provisioning_an_unknown_user_is_refused() {
        let directory = directory(Vec::new());
        let decision = decide_account(&directory, &upstream(false, false), &identity("u-1", None, false), "new");
        assert_eq!(decision, AccountDecision::Refused);
    }
}
