//! From an upstream's claims to a local account, as pure functions: the claim mapping, and the linking policy
//! (by upstream subject always; by verified email only when the upstream allows it; else just-in-time
//! provisioning, or a refusal).

use crate::config::{ClaimMapping, UpstreamConfig};
use crate::directory::{Directory, StoredUser, UpstreamLink};
use serde_json::Value;
use std::collections::BTreeMap;

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
        // Some providers send it as a string (OIDC Core §5.1 says boolean): accepted from userinfo and `oauth2`
        // answers; an ID token with a string fails the token response's parsing before this.
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

/// The email of an `oauth2` user once the email list (`emails_url`) was asked: the claimed address, verified only
/// when the list says so (a public profile address is not a verified one); without a claimed address, the list's
/// primary verified one ([`email_from_list`]). `None`: no address.
pub fn email_with_list(claimed: Option<&str>, list: &Value) -> Option<(String, bool)> {
    let Some(claimed) = claimed.filter(|email| email.contains('@')) else {
        return email_from_list(list).map(|email| (email, true));
    };
    let verified = list.as_array().is_some_and(|entries| {
        entries.iter().any(|entry| {
            entry.get("verified").and_then(Value::as_bool) == Some(true)
                && entry.get("email").and_then(Value::as_str).is_some_and(|email| email.eq_ignore_ascii_case(claimed))
        })
    });
    Some((claimed.to_string(), verified))
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
    /// Nobody is linked and provisioning is off, or the user is disabled.
    Refused,
}

/// Whether the upstream's `email_verified` is believed: only from an upstream trusted for emails (`trust_email`,
/// or `link_by_email`, which trusts them for linking already). Any other upstream's "verified" address is stored
/// unverified: it never links accounts here and our ID tokens never call it verified.
pub fn trusts_email(upstream: &UpstreamConfig) -> bool {
    upstream.trust_email || upstream.link_by_email
}

/// The fast path of a sign-in, against this node's cached directory: the user already linked to this upstream
/// account (`None`: not linked, or disabled; the stored users then decide, see [`decide_account`]).
pub fn linked_user(directory: &Directory, upstream: &str, subject: &str) -> Option<String> {
    directory.user_by_link(upstream, subject).filter(|user| !user.disabled).map(|user| user.id.clone())
}

/// The linking policy, over the stored users as they are at the moment of the change (the caller runs it inside
/// the store's checked change, so that nothing of a stale cache is written back). `new_user_id` is the id a
/// provisioned user gets (derived from the upstream and subject, so that two nodes provisioning the same sign-in at
/// once write the same entry).
///
/// Linking by email takes only a user whose verification is local: one with a password (declared in the config or
/// made by the admin API), never an account provisioned from an upstream (whose "verified" email some upstream
/// asserted), and never a user who holds a link at this upstream already (a recycled address).
pub fn decide_account(
    users: &BTreeMap<String, StoredUser>,
    upstream: &UpstreamConfig,
    identity: &UpstreamIdentity,
    new_user_id: &str,
) -> AccountDecision {
    let link = UpstreamLink { upstream: upstream.id.clone(), subject: identity.subject.clone() };
    if let Some(user) = users.values().find(|user| user.links.contains(&link)) {
        // A disabled user (admin API) signs in through no upstream either.
        if user.disabled {
            return AccountDecision::Refused;
        }
        return AccountDecision::Linked { user_id: user.id.clone() };
    }
    if let (true, true, Some(email)) = (upstream.link_by_email, identity.email_verified, identity.email.as_deref()) {
        let email = email.to_lowercase();
        let mut same_email = users.values().filter(|user| {
            user.email_verified && user.email.as_deref().is_some_and(|stored| stored.to_lowercase() == email)
        });
        // Two users sharing a verified email: neither is picked.
        if let (Some(user), None) = (same_email.next(), same_email.next()) {
            let local = !user.password_hash.is_empty();
            let linked_here = user.links.iter().any(|held| held.upstream == upstream.id);
            if local && !linked_here {
                if user.disabled {
                    return AccountDecision::Refused;
                }
                return AccountDecision::LinkByEmail { user: with_link(user, link) };
            }
        }
    }
    if !upstream.provision {
        return AccountDecision::Refused;
    }
    if let Some(user) = users.get(new_user_id) {
        if user.disabled {
            // Re-provisioning would enable it again.
            return AccountDecision::Refused;
        }
        // Provisioned earlier but the link was lost (an admin removed it): the entry gets it back.
        return AccountDecision::Provision { user: with_link(user, link) };
    }
    let user = StoredUser {
        id: new_user_id.to_string(),
        username: free_username(users, upstream, identity, new_user_id),
        // No password: an empty hash never verifies, and the login form treats the user as unknown.
        password_hash: String::new(),
        email: identity.email.clone(),
        email_verified: identity.email_verified && trusts_email(upstream),
        name: identity.name.clone(),
        given_name: identity.given_name.clone(),
        family_name: identity.family_name.clone(),
        links: vec![link],
        disabled: false,
    };
    AccountDecision::Provision { user }
}

/// The stored user with one more link (links kept sorted).
fn with_link(user: &StoredUser, link: UpstreamLink) -> StoredUser {
    let mut entry = user.clone();
    entry.links.push(link);
    entry.links.sort();
    entry
}

/// The upstream's username when no stored user (disabled ones included: usernames stay unique) has it, else
/// `{upstream}-{username or subject}`, else the new id (unique as a subject id, hence free as a name unless some
/// user is named like it, which the directory's check then refuses).
fn free_username(
    users: &BTreeMap<String, StoredUser>,
    upstream: &UpstreamConfig,
    identity: &UpstreamIdentity,
    id: &str,
) -> String {
    // Usernames ignore case (the directory looks them up lowercased).
    let taken = |name: &str| users.values().any(|user| user.username.to_lowercase() == name.to_lowercase());
    let base = identity.username.clone().unwrap_or_else(|| identity.subject.clone());
    let candidates = [base.clone(), format!("{}-{base}", upstream.id)];
    candidates.into_iter().find(|name| !taken(name)).unwrap_or_else(|| id.to_string())
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

    /// The dev users (alice, verified alice@example.com, with a password) plus `extra` users, as stored; checked
    /// to make a sound directory.
    fn directory(extra: Vec<StoredUser>) -> BTreeMap<String, StoredUser> {
        let config = Config::dev("127.0.0.1:8080", None);
        let mut users: Vec<StoredUser> = config.users.iter().map(StoredUser::from_config).collect();
        users.extend(extra);
        Directory::from_entries(&[], &users, [7; 32], &config.issuer).unwrap();
        users.into_iter().map(|user| (user.id.clone(), user)).collect()
    }

    /// Exactly these users (the dev alice replaced by a variant of it, same id).
    fn directory_of(users: Vec<StoredUser>) -> BTreeMap<String, StoredUser> {
        Directory::from_entries(&[], &users, [7; 32], "http://127.0.0.1:8080").unwrap();
        users.into_iter().map(|user| (user.id.clone(), user)).collect()
    }

    fn alice() -> StoredUser {
        StoredUser::from_config(&Config::dev("127.0.0.1:8080", None).users[0])
    }

    /// The entry a decision stores.
    fn stored(decision: AccountDecision) -> StoredUser {
        match decision {
            AccountDecision::LinkByEmail { user } | AccountDecision::Provision { user } => user,
            other => panic!("a stored entry expected: {other:?}"),
        }
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
    fn a_public_profile_email_is_verified_only_by_the_list() {
        let list = json!([
            {"email": "main@x.example", "primary": true, "verified": true},
            {"email": "public@x.example", "primary": false, "verified": false},
        ]);
        assert_eq!(email_with_list(Some("Main@x.example"), &list), Some(("Main@x.example".into(), true)));
        assert_eq!(email_with_list(Some("public@x.example"), &list), Some(("public@x.example".into(), false)));
        assert_eq!(email_with_list(Some("other@x.example"), &list), Some(("other@x.example".into(), false)));
        assert_eq!(email_with_list(None, &list), Some(("main@x.example".into(), true)));
        assert_eq!(email_with_list(None, &json!([])), None);
    }

    #[test]
    fn a_linked_subject_signs_in_as_its_user_whatever_the_email() {
        let mut bob = alice();
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
        let mut twin = alice();
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

    /// A lax upstream's "verified" email is stored unverified, so it can neither be linked to later (account
    /// takeover through another upstream) nor appear verified in our ID tokens.
    #[test]
    fn an_email_is_stored_verified_only_from_an_upstream_trusted_for_emails() {
        let directory = directory(Vec::new());
        let claimed = identity("u-1", Some("victim@corp.example"), true);
        let lax = stored(decide_account(&directory, &upstream(false, true), &claimed, "acme-new"));
        assert_eq!((lax.email.as_deref(), lax.email_verified), (Some("victim@corp.example"), false));
        let mut trusted = upstream(false, true);
        trusted.trust_email = true;
        assert!(stored(decide_account(&directory, &trusted, &claimed, "acme-new")).email_verified);
        assert!(stored(decide_account(&directory, &upstream(true, true), &claimed, "acme-new")).email_verified);
    }

    /// Even a verified email on an account provisioned from an upstream (stored by an older version, or from a
    /// trusted upstream) never receives a link by email: only local verification counts.
    #[test]
    fn email_linking_never_picks_an_account_provisioned_from_an_upstream() {
        let mut attacker = alice();
        (attacker.id, attacker.username, attacker.password_hash) = ("lax-p".into(), "p".into(), String::new());
        attacker.email = Some("victim@corp.example".into());
        attacker.links = vec![UpstreamLink { upstream: "lax".into(), subject: "evil".into() }];
        let directory = directory(vec![attacker]);
        let victim = identity("v-1", Some("victim@corp.example"), true);
        let user = stored(decide_account(&directory, &upstream(true, true), &victim, "acme-new"));
        assert_eq!(user.id, "acme-new", "a new account, not the attacker's");
        assert_eq!(user.links, vec![UpstreamLink { upstream: "acme".into(), subject: "v-1".into() }]);
    }

    /// A recycled address: the local user already holds a link at this upstream, for another subject.
    #[test]
    fn email_linking_never_adds_a_second_link_at_the_same_upstream() {
        let mut linked = alice();
        linked.links = vec![UpstreamLink { upstream: "acme".into(), subject: "u-old".into() }];
        let directory = directory_of(vec![linked.clone()]);
        let newcomer = identity("u-new", Some("alice@example.com"), true);
        let user = stored(decide_account(&directory, &upstream(true, true), &newcomer, "acme-new"));
        assert_eq!(user.id, "acme-new");
        assert_eq!(decide_account(&directory, &upstream(true, false), &newcomer, "acme-new"), AccountDecision::Refused);
    }

    #[test]
    fn a_disabled_user_is_never_signed_in_linked_or_reprovisioned() {
        let mut disabled = alice();
        disabled.disabled = true;
        disabled.links = vec![UpstreamLink { upstream: "acme".into(), subject: "u-9".into() }];
        let by_link = directory_of(vec![disabled.clone()]);
        let refused = decide_account(&by_link, &upstream(true, true), &identity("u-9", None, false), "acme-new");
        assert_eq!(refused, AccountDecision::Refused);
        disabled.links.clear();
        let by_email = directory_of(vec![disabled.clone()]);
        let verified = identity("u-1", Some("alice@example.com"), true);
        assert_eq!(decide_account(&by_email, &upstream(true, true), &verified, "acme-new"), AccountDecision::Refused);
        (disabled.id, disabled.username) = ("acme-new".into(), "someone".into());
        let by_id = directory(vec![disabled]);
        assert_eq!(decide_account(&by_id, &upstream(false, true), &verified, "acme-new"), AccountDecision::Refused);
    }

    /// Usernames stay unique with disabled users too (the directory refuses a duplicate either way): a disabled
    /// user's name is skipped, never chosen (which made every provisioning of that name fail).
    #[test]
    fn a_disabled_users_name_is_not_free() {
        let mut disabled = alice();
        (disabled.id, disabled.username, disabled.disabled) = ("old".into(), "Carol".into(), true);
        let mut acme_carol = alice();
        (acme_carol.id, acme_carol.username, acme_carol.email) = ("ac".into(), "acme-carol".into(), None);
        let mut carol = identity("u-1", None, false);
        carol.username = Some("carol".into());
        let users = directory(vec![disabled.clone()]);
        assert_eq!(stored(decide_account(&users, &upstream(false, true), &carol, "acme-x")).username, "acme-carol");
        let users = directory(vec![disabled, acme_carol]);
        let user = stored(decide_account(&users, &upstream(false, true), &carol, "acme-x"));
        assert_eq!(user.username, "acme-x", "both names taken: the id");
        let mut all: Vec<StoredUser> = users.into_values().collect();
        all.push(user);
        Directory::from_entries(&[], &all, [7; 32], "http://127.0.0.1:8080").expect("a sound directory");
    }
}
