//! `RedisReplica` against real `redis-server` processes (started per test on a free loopback port, killed on drop):
//! fencing, leases (and the Lua scripts agreeing with the pure decisions), pipelined ordering, expiry, `WAIT`,
//! the eviction-policy check, a shard actor on top, and Sentinel with a failover.

use super::{keys, RedisReplica, RedisSettings, RedisTarget};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::replica::lease::{decide_acquire, decision_cases, holds};
use crate::replica::testing::TestRedis;
use crate::replica::{Acquired, Epoch, LeaseName, Leases, RecordWrite, Replica, ReplicaError};
use crate::shard::model::{
    AuthenticatePending, CreatePending, FinishPending, GrantIssue, RedeemCode, ShardError, ShardOp, ShardResult,
};
use crate::shard::{Execute, Restart, ShardActor};
use actix::{Addr, Supervisor};
use futures::future::join_all;
use idp_proto::records::{
    Authentication, AuthorizationRequest, PendingAuthorization, PendingStage, Prompt, RecordKey, RecordKind,
    ResponseMode, ResponseType,
};
use idp_proto::{RecordId, ShardId};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MINUTE: u64 = 60_000;
const TTL_MS: u64 = 5_000;

fn settings(target: RedisTarget) -> RedisSettings {
    RedisSettings { target, min_replicas_ack: 0, wait_timeout: Duration::from_millis(500), testing: Default::default() }
}

async fn must_connect(settings: RedisSettings) -> Arc<RedisReplica> {
    match RedisReplica::connect(settings).await {
        Ok(replica) => replica,
        Err(error) => panic!("cannot connect the redis replica: {error}"),
    }
}

async fn replica_of(redis: &TestRedis) -> Arc<RedisReplica> {
    must_connect(settings(RedisTarget::Url(redis.url()))).await
}

fn now_ms() -> u64 {
    SystemClock::default().now_ms()
}

fn live(members: &[&str]) -> Vec<String> {
    members.iter().map(|member| member.to_string()).collect()
}

fn key(byte: u8) -> RecordKey {
    RecordKey::new(RecordKind::Session, RecordId([byte; 32]))
}

fn put(byte: u8, value: &[u8]) -> RecordWrite {
    RecordWrite { key: key(byte), value: Some(value.to_vec()), expires_at_ms: now_ms() + 10 * MINUTE }
}

fn delete(byte: u8) -> RecordWrite {
    RecordWrite { key: key(byte), value: None, expires_at_ms: 0 }
}

async fn must_acquire(replica: &RedisReplica, name: LeaseName, node: &str, live_members: &[&str]) -> Epoch {
    match replica.acquire(vec![name], node, live(live_members), TTL_MS).await.unwrap().as_slice() {
        [Acquired::Granted { epoch }] => *epoch,
        other => panic!("lease not granted to {node}: {other:?}"),
    }
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, timeout: Duration, mut probe: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Leases and fencing
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_lua_scripts_decide_leases_exactly_like_the_pure_functions() {
    let redis = TestRedis::start();
    let replica = replica_of(&redis).await;
    let name = LeaseName::Shard(ShardId(5));
    let (lease_key, epoch_key) = (keys::lease_key(&name), keys::epoch_key(&name));
    for (stored, remaining, node, live, takeover) in decision_cases() {
        let case = format!("{stored:?} {remaining:?} {node:?} {live:?} {takeover:?}");
        redis.query::<()>(redis::cmd("SET").arg(&epoch_key).arg(10));
        match (stored, remaining) {
            (Some(stored), Some(remaining)) => {
                redis.query::<()>(redis::cmd("SET").arg(&lease_key).arg(stored).arg("PX").arg(remaining))
            }
            (Some(stored), None) => redis.query::<()>(redis::cmd("SET").arg(&lease_key).arg(stored)),
            (None, _) => redis.query::<()>(redis::cmd("DEL").arg(&lease_key)),
        }
        let expected = decide_acquire(stored, remaining, node, &live, takeover).outcome(11, remaining);
        let mut outcome = replica.acquire_with(vec![name.clone()], node, live.clone(), takeover).await.unwrap();
        // The script reads the remaining time to live a few milliseconds after it was set.
        if let [Acquired::HeldBy { expires_in_ms: Some(read), .. }] = outcome.as_mut_slice() {
            let set = remaining.expect("a lease set without expiry reads as none");
            assert!(*read <= set && *read + 1_000 > set, "{case}: PTTL {read} after setting {set}");
            *read = set;
        }
        assert_eq!(outcome, vec![expected.clone()], "{case}");
        let stored_after: Option<String> = redis.query(redis::cmd("GET").arg(&lease_key));
        let epoch_after: u64 = redis.query(redis::cmd("GET").arg(&epoch_key));
        match expected {
            Acquired::Granted { .. } => {
                assert_eq!(stored_after.as_deref(), Some(format!("{node} 11").as_str()), "{case}");
                assert_eq!(epoch_after, 11, "{case}");
                let ttl_ms: i64 = redis.query(redis::cmd("PTTL").arg(&lease_key));
                assert!(ttl_ms > 0 && ttl_ms <= TTL_MS as i64, "{case}: ttl {ttl_ms}");
            }
            Acquired::HeldBy { .. } => {
                assert_eq!(stored_after.as_deref(), stored, "{case}");
                assert_eq!(epoch_after, 10, "{case}");
            }
        }
    }
    // Renewal and release require exactly what `holds` says, against the same stored forms.
    for (stored, _, node, _, _) in decision_cases() {
        for epoch in [3, 5, 7] {
            let case = format!("{stored:?} {node:?} {epoch}");
            match stored {
                Some(stored) => redis.query::<()>(redis::cmd("SET").arg(&lease_key).arg(stored)),
                None => redis.query::<()>(redis::cmd("DEL").arg(&lease_key)),
            }
            let renewed = replica.renew(vec![(name.clone(), epoch)], node, TTL_MS).await.unwrap();
            assert_eq!(renewed, vec![holds(stored, node, epoch)], "{case}");
            replica.release(vec![(name.clone(), epoch)], node).await.unwrap();
            let after: Option<String> = redis.query(redis::cmd("GET").arg(&lease_key));
            let expected_after = if holds(stored, node, epoch) { None } else { stored };
            assert_eq!(after.as_deref(), expected_after, "{case}");
        }
    }
}

#[tokio::test]
async fn leases_are_granted_in_batches_renewed_released_taken_over_and_expire() {
    let redis = TestRedis::start();
    let replica = replica_of(&redis).await;
    let names: Vec<LeaseName> = (0..64).map(|shard| LeaseName::Shard(ShardId(shard))).collect();
    let granted = replica.acquire(names.clone(), "a", live(&["a", "b"]), TTL_MS).await.unwrap();
    assert_eq!(granted, vec![Acquired::Granted { epoch: 1 }; 64]);
    let refused = replica.acquire(names[..2].to_vec(), "b", live(&["a", "b"]), TTL_MS).await.unwrap();
    assert!(
        refused.iter().all(|outcome| matches!(outcome, Acquired::HeldBy { node, epoch: 1, expires_in_ms: Some(ms) }
            if node == "a" && *ms <= TTL_MS)),
        "{refused:?}"
    );
    assert_eq!(refused.len(), 2);
    assert_eq!(replica.holder(names[0].clone()).await.unwrap(), Some(("a".to_string(), 1)));

    // Renewal extends the lease's TTL, and only with the right epoch and node.
    let shard_zero = keys::lease_key(&names[0]);
    redis.query::<()>(redis::cmd("PEXPIRE").arg(&shard_zero).arg(100));
    let renewed = replica.renew(vec![(names[0].clone(), 1), (names[1].clone(), 2)], "a", TTL_MS).await.unwrap();
    assert_eq!(renewed, vec![true, false]);
    assert!(redis.query::<i64>(redis::cmd("PTTL").arg(&shard_zero)) > 1_000);
    assert_eq!(replica.renew(vec![(names[0].clone(), 1)], "b", TTL_MS).await.unwrap(), vec![false]);

    // A restarted holder takes its lease again under a new epoch; a dead holder's lease is taken over.
    assert_eq!(must_acquire(&replica, names[0].clone(), "a", &["a", "b"]).await, 2);
    assert_eq!(must_acquire(&replica, names[0].clone(), "b", &["b"]).await, 3);
    assert_eq!(replica.renew(vec![(names[0].clone(), 2)], "a", TTL_MS).await.unwrap(), vec![false]);
    replica.release(vec![(names[0].clone(), 2)], "a").await.unwrap();
    assert_eq!(replica.holder(names[0].clone()).await.unwrap(), Some(("b".to_string(), 3)));

    // A graceful release keeps the epoch, so the next owner's is higher.
    replica.release(vec![(names[0].clone(), 3)], "b").await.unwrap();
    assert_eq!(replica.holder(names[0].clone()).await.unwrap(), None);
    assert_eq!(must_acquire(&replica, names[0].clone(), "a", &["a", "b"]).await, 4);

    // An unrenewed lease expires, and then a live node's lease is free to take.
    let keyring = LeaseName::Singleton("keyring");
    let short = replica.acquire(vec![keyring.clone()], "a", live(&["a", "b"]), 50).await.unwrap();
    assert_eq!(short, vec![Acquired::Granted { epoch: 1 }]);
    wait_for("the key ring lease to expire", Duration::from_secs(2), || {
        let replica = replica.clone();
        let keyring = keyring.clone();
        async move { replica.holder(keyring).await.unwrap().is_none() }
    })
    .await;
    assert_eq!(must_acquire(&replica, keyring, "b", &["a", "b"]).await, 2);
}

#[tokio::test]
async fn a_write_is_fenced_once_another_node_took_the_lease() {
    // I6
    let redis = TestRedis::start();
    let replica = replica_of(&redis).await;
    let shard = ShardId(3);
    let lease = LeaseName::Shard(shard);
    let old_epoch = must_acquire(&replica, lease.clone(), "a", &["a", "b"]).await;
    replica.write_records(shard, old_epoch, vec![put(1, b"one")]).await.unwrap();

    // Gossip declares "a" dead; "b" takes the shard while "a" still believes it owns it.
    let new_epoch = must_acquire(&replica, lease.clone(), "b", &["b"]).await;
    // Both writes go in one pipeline: the stale one is refused, the new owner's applies.
    let stale = replica.write_records(shard, old_epoch, vec![put(1, b"stale"), delete(2)]);
    let fresh = replica.write_records(shard, new_epoch, vec![put(2, b"two")]);
    let (stale, fresh) = futures::join!(stale, fresh);
    assert_eq!(stale, Err(ReplicaError::Fenced { lease: lease.clone(), current: new_epoch, attempted: old_epoch }));
    assert!(stale.unwrap_err().to_string().contains("fenced"));
    fresh.unwrap();
    let values = replica.read_records(shard, vec![key(1), key(2)]).await.unwrap();
    assert_eq!(values, vec![Some(b"one".to_vec()), Some(b"two".to_vec())]);
    // An epoch ahead of the stored one is refused too (the epoch key was lost): only the current epoch writes.
    let ahead = replica.write_records(shard, new_epoch + 1, vec![put(3, b"x")]).await;
    assert!(matches!(ahead, Err(ReplicaError::Fenced { current, .. }) if current == new_epoch), "{ahead:?}");

    // The key ring document is fenced by its singleton lease alike.
    let keyring = LeaseName::Singleton("keyring");
    let first = must_acquire(&replica, keyring.clone(), "a", &["a"]).await;
    replica.write_document_fenced("keyring", b"v1".to_vec(), keyring.clone(), first).await.unwrap();
    let second = must_acquire(&replica, keyring.clone(), "b", &["b"]).await;
    let stale = replica.write_document_fenced("keyring", b"stale".to_vec(), keyring.clone(), first).await;
    assert_eq!(stale, Err(ReplicaError::Fenced { lease: keyring.clone(), current: second, attempted: first }));
    assert_eq!(replica.read_document("keyring").await.unwrap(), Some(b"v1".to_vec()));
    replica.write_document_fenced("keyring", b"v2".to_vec(), keyring, second).await.unwrap();
    assert_eq!(replica.read_document("keyring").await.unwrap(), Some(b"v2".to_vec()));
    assert_eq!(redis.query::<Vec<u8>>(redis::cmd("GET").arg("idp:doc:keyring")), b"v2");
}

// ---------------------------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn records_carry_their_expiry_and_deletes_remove_them() {
    let redis = TestRedis::start();
    let replica = replica_of(&redis).await;
    let shard = ShardId(11);
    let expires_at_ms = now_ms() + 10 * MINUTE;
    let past = RecordWrite { key: key(3), value: Some(b"old".to_vec()), expires_at_ms: now_ms() - MINUTE };
    let zero = RecordWrite { key: key(4), value: Some(b"zero".to_vec()), expires_at_ms: 0 };
    let live_record = RecordWrite { key: key(1), value: Some(vec![0, 255, 10, 13]), expires_at_ms };
    replica.write_records(shard, 0, vec![live_record, put(2, b"two"), past, zero]).await.unwrap();

    let stored_key = keys::record_key(shard, &key(1));
    let expire_time: i64 = redis.query(redis::cmd("PEXPIRETIME").arg(&stored_key));
    assert_eq!(expire_time, expires_at_ms as i64);
    let values = replica.read_records(shard, vec![key(1), key(2), key(3), key(4), key(5)]).await.unwrap();
    assert_eq!(values, vec![Some(vec![0, 255, 10, 13]), Some(b"two".to_vec()), None, None, None]);
    assert_eq!(redis.query::<i64>(redis::cmd("EXISTS").arg(keys::record_key(shard, &key(3)))), 0);

    replica.write_records(shard, 0, vec![delete(2)]).await.unwrap();
    assert_eq!(replica.read_records(shard, vec![key(2)]).await.unwrap(), vec![None]);
    // Records of another shard are other keys.
    assert_eq!(replica.read_records(ShardId(12), vec![key(1)]).await.unwrap(), vec![None]);
    assert_eq!(replica.read_records(shard, Vec::new()).await.unwrap(), Vec::<Option<Vec<u8>>>::new());
    assert_eq!(replica.read_document("absent").await.unwrap(), None);
    replica.write_document("plain", b"doc".to_vec()).await.unwrap();
    assert_eq!(replica.read_document("plain").await.unwrap(), Some(b"doc".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_of_many_shards_from_many_tasks_apply_in_call_order() {
    // Write i of a shard stores key i and deletes key i-1: any two writes of a shard applied out of order leave
    // a stale key behind.
    const SHARDS: u16 = 64;
    const WRITES: u8 = 40;
    let redis = TestRedis::start();
    let replica = replica_of(&redis).await;
    let names = (0..SHARDS).map(|shard| LeaseName::Shard(ShardId(shard))).collect();
    let epochs = replica.acquire(names, "a", live(&["a"]), 60_000).await.unwrap();
    assert!(epochs.iter().all(|outcome| *outcome == Acquired::Granted { epoch: 1 }));

    let tasks = (0..8u16).map(|task| {
        let replica = replica.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for round in 0..WRITES {
                for shard in (task..SHARDS).step_by(8) {
                    let mut writes = vec![put(round, &[round, shard as u8])];
                    if round > 0 {
                        writes.push(delete(round - 1));
                    }
                    // Enqueued at call time: later calls of the shard are ordered after it, awaited or not.
                    acks.push(replica.write_records(ShardId(shard), 1, writes));
                }
                if round % 10 == 9 {
                    tokio::task::yield_now().await;
                }
            }
            join_all(acks).await.into_iter().collect::<Result<Vec<()>, _>>()
        })
    });
    for result in join_all(tasks).await {
        result.unwrap().unwrap();
    }
    for shard in 0..SHARDS {
        let values = replica.read_records(ShardId(shard), (0..WRITES).map(key).collect()).await.unwrap();
        let present: Vec<usize> =
            values.iter().enumerate().filter(|(_, value)| value.is_some()).map(|(i, _)| i).collect();
        assert_eq!(present, vec![usize::from(WRITES - 1)], "shard {shard}");
        assert_eq!(values[usize::from(WRITES - 1)], Some(vec![WRITES - 1, shard as u8]));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// WAIT and the eviction policy
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn writes_wait_for_a_live_replica() {
    let master = TestRedis::start();
    let replica_server = TestRedis::start_replica_of(&master);
    // A generous WAIT bound: the replica answers at once when it is not starved of CPU, and on a loaded 2-core
    // machine a short bound turns a live replica into a false "not durable" (the failing case has its own test).
    let wait_timeout = Duration::from_secs(5);
    let settings = RedisSettings { min_replicas_ack: 1, wait_timeout, ..settings(RedisTarget::Url(master.url())) };
    let replica = must_connect(settings).await;
    let shard = ShardId(1);
    let epoch = must_acquire(&replica, LeaseName::Shard(shard), "a", &["a"]).await;
    replica.write_records(shard, epoch, vec![put(1, b"one")]).await.unwrap();
    replica.write_document("doc", b"d".to_vec()).await.unwrap();
    // Acknowledged means on the replica already.
    let on_replica: Option<Vec<u8>> = replica_server.query(redis::cmd("GET").arg(keys::record_key(shard, &key(1))));
    assert_eq!(on_replica, Some(b"one".to_vec()));
    let epoch_on_replica: u64 = replica_server.query(redis::cmd("GET").arg("idp:epoch:shard:1"));
    assert_eq!(epoch_on_replica, epoch);
    // The barrier passes with a live replica.
    replica.durable_barrier().await.unwrap();
}

#[tokio::test]
async fn writes_fail_closed_within_the_wait_timeout_without_a_replica() {
    let master = TestRedis::start();
    let wait_timeout = Duration::from_millis(200);
    let replica =
        must_connect(RedisSettings { min_replicas_ack: 1, wait_timeout, ..settings(RedisTarget::Url(master.url())) })
            .await;
    let started = Instant::now();
    let writes = join_all((0..5).map(|shard| replica.write_records(ShardId(shard), 0, vec![put(1, b"x")]))).await;
    for write in writes {
        assert!(matches!(&write, Err(ReplicaError::Unavailable(reason)) if reason.contains("0 of 1")), "{write:?}");
    }
    let acquired = replica.acquire(vec![LeaseName::Shard(ShardId(1))], "a", live(&["a"]), TTL_MS).await;
    assert!(matches!(&acquired, Err(ReplicaError::Unavailable(_))), "{acquired:?}");
    let document = replica.write_document("doc", b"d".to_vec()).await;
    assert!(matches!(&document, Err(ReplicaError::Unavailable(_))), "{document:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= wait_timeout && elapsed < wait_timeout * 3 + Duration::from_secs(1), "{elapsed:?}");
    // Reads do not wait for replicas: they see the write whose WAIT fell short...
    assert_eq!(replica.read_records(ShardId(0), vec![key(1)]).await.unwrap(), vec![Some(b"x".to_vec())]);
    // ...and the barrier says that what they saw is not durable.
    let barrier = replica.durable_barrier().await;
    assert!(matches!(&barrier, Err(ReplicaError::Unavailable(reason)) if reason.contains("0 of 1")), "{barrier:?}");
    // Without replicas to wait for, there is no barrier.
    replica_of(&master).await.durable_barrier().await.unwrap();
}

#[tokio::test]
async fn only_the_noeviction_policy_is_accepted() {
    let default = TestRedis::start();
    replica_of(&default).await.check_eviction_policy().await.unwrap();
    for policy in ["allkeys-lru", "volatile-lru", "volatile-ttl"] {
        let evicting = TestRedis::start_with(&["--maxmemory-policy", policy]);
        let refused = replica_of(&evicting).await.check_eviction_policy().await;
        assert!(
            matches!(&refused, Err(ReplicaError::Unavailable(reason)) if reason.contains(policy) && reason.contains("noeviction")),
            "{policy}: {refused:?}"
        );
    }
    // A Redis that disables CONFIG (managed offerings) is accepted with a warning.
    let no_config = TestRedis::start_with(&["--rename-command", "CONFIG", ""]);
    replica_of(&no_config).await.check_eviction_policy().await.unwrap();
}

#[tokio::test]
async fn ping_reports_a_dead_or_demoted_master_and_connect_fails_without_redis() {
    let mut redis = TestRedis::start();
    let other = TestRedis::start();
    let replica = replica_of(&redis).await;
    assert!(replica.ping().await);
    // Demoted: the server now answers as a replica, and refuses writes (READONLY) without applying them.
    redis.query::<()>(redis::cmd("REPLICAOF").arg("127.0.0.1").arg(other.port()));
    assert!(!replica.ping().await);
    let refused = replica.write_records(ShardId(0), 0, vec![put(1, b"x")]).await;
    assert!(matches!(&refused, Err(ReplicaError::Unavailable(reason)) if reason.contains("read only")), "{refused:?}");
    redis.query::<()>(redis::cmd("REPLICAOF").arg("NO").arg("ONE"));
    assert!(replica.ping().await);
    replica.write_records(ShardId(0), 0, vec![put(1, b"x")]).await.unwrap();
    redis.kill();
    assert!(!replica.ping().await);
    let write = replica.write_records(ShardId(0), 0, vec![put(1, b"x")]).await;
    assert!(matches!(&write, Err(ReplicaError::Unavailable(_))), "{write:?}");
    let refused = RedisReplica::connect(settings(RedisTarget::Url(redis.url()))).await;
    assert!(matches!(refused, Err(ReplicaError::Unavailable(_))));
}

// ---------------------------------------------------------------------------------------------------------------
// A shard actor over Redis
// ---------------------------------------------------------------------------------------------------------------

async fn run<O: ShardOp>(actor: &Addr<ShardActor>, op: O) -> ShardResult<O::Output> {
    actor.send(Execute(op)).await.unwrap_or_else(|error| Err(ShardError::Unavailable(error.to_string())))
}

/// A code issued through the shard, like the node does: pending authorization, login, finish.
async fn must_issue_code(actor: &Addr<ShardActor>, now_ms: u64) -> RecordId {
    let (pending, session, grant, code) =
        (RecordId::random(), RecordId::random(), RecordId::random(), RecordId::random());
    let request = AuthorizationRequest {
        client_id: "client-a".into(),
        redirect_uri: "https://rp.example/cb".into(),
        response_type: ResponseType { code: true, id_token: false, token: false },
        response_mode: ResponseMode::Query,
        scopes: vec!["openid".into()],
        state: None,
        nonce: None,
        code_challenge: None,
        prompt: Prompt::default(),
        max_age: None,
        login_hint: None,
        idp_hint: None,
        ui_locales: None,
        acr_values: None,
        resource: None,
    };
    let stage = PendingStage::AwaitingLogin;
    let record = PendingAuthorization { request, stage, created_at_ms: now_ms, expires_at_ms: now_ms + 10 * MINUTE };
    run(actor, CreatePending { id: pending, pending: record }).await.unwrap();
    let authentication =
        Authentication { user_id: "alice".into(), auth_time: now_ms / 1_000, amr: vec!["pwd".into()], acr: None };
    let authenticate = AuthenticatePending {
        pending,
        existing_session: None,
        new_session: session,
        new_sid: "sid".into(),
        authentication,
        session_expires_at_ms: now_ms + 60 * MINUTE,
    };
    run(actor, authenticate).await.unwrap();
    let issue = GrantIssue {
        grant,
        code: Some(code),
        code_expires_at_ms: now_ms + MINUTE,
        grant_expires_at_ms: now_ms + 60 * MINUTE,
        offline: false,
    };
    run(actor, FinishPending { pending, session, issue }).await.unwrap();
    code
}

fn redeem(code: RecordId) -> RedeemCode {
    RedeemCode {
        code,
        client_id: "client-a".into(),
        redirect_uri: Some("https://rp.example/cb".into()),
        code_verifier: None,
        client_may_refresh: false,
        new_refresh: RecordId::random(),
    }
}

#[actix_rt::test]
async fn a_shard_actor_over_redis_redeems_a_code_once_under_twenty_concurrent_attempts() {
    // I2, with the writes pipelined through Redis
    let redis = TestRedis::start();
    let replica = replica_of(&redis).await;
    let shard = ShardId(7);
    let epoch = must_acquire(&replica, LeaseName::Shard(shard), "a", &["a"]).await;
    let clock: SharedClock = Arc::new(SystemClock::default());
    let actor = {
        let (replica, clock) = (replica.clone(), clock.clone());
        Supervisor::start(move |_ctx| ShardActor::new(shard, epoch, replica, clock))
    };
    for restart_first in [false, true] {
        let code = must_issue_code(&actor, clock.now_ms()).await;
        if restart_first {
            actor.send(Restart).await.unwrap();
        }
        let replies = join_all((0..20).map(|_| run(&actor, redeem(code)))).await;
        let successes = replies.iter().filter(|reply| reply.is_ok()).count();
        let replays = replies.iter().filter(|reply| matches!(reply, Err(ShardError::CodeReplayed))).count();
        assert_eq!((successes, replays), (1, 19), "{replies:?}");
        // Redis holds the consumed code: a restarted actor refuses it too.
        actor.send(Restart).await.unwrap();
        assert!(matches!(run(&actor, redeem(code)).await, Err(ShardError::CodeReplayed)));
        let stored: i64 =
            redis.query(redis::cmd("EXISTS").arg(keys::record_key(shard, &RecordKey::new(RecordKind::Code, code))));
        assert_eq!(stored, 1);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn through_sentinel_the_replica_follows_a_failover_and_keeps_acknowledged_writes() {
    const MASTER_NAME: &str = "idp-test";
    let mut master = TestRedis::start();
    let standby = TestRedis::start_replica_of(&master);
    let sentinel = TestRedis::start_sentinel(MASTER_NAME, &master, Duration::from_millis(400));
    // The Sentinel must know the replica before the master dies, or it has nothing to promote.
    sentinel.wait_until("the sentinel to discover the replica", Duration::from_secs(10), |connection| {
        let replicas: redis::Value = redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME).query(connection).ok()?;
        let text = format!("{replicas:?}");
        (text.contains(&standby.port().to_string()) && !text.contains("disconnected")).then_some(())
    });

    let target = RedisTarget::Sentinel { sentinels: vec![sentinel.address()], master_name: MASTER_NAME.into() };
    let replica = must_connect(settings(target)).await;
    assert!(replica.ping().await);
    let shard = ShardId(2);
    let epoch = must_acquire(&replica, LeaseName::Shard(shard), "a", &["a"]).await;
    replica.write_records(shard, epoch, vec![put(1, b"before")]).await.unwrap();
    // Replicated before the master dies (what `min_replicas_ack` guarantees; after the failover the promoted
    // standby has no replica of its own, so this replica acknowledges on the master alone).
    let stored_key = keys::record_key(shard, &key(1));
    standby.wait_until("the write to reach the standby", Duration::from_secs(5), |connection| {
        redis::cmd("GET").arg(&stored_key).query::<Option<Vec<u8>>>(connection).ok().flatten()
    });

    master.kill();
    let failed = replica.write_records(shard, epoch, vec![put(2, b"during")]).await;
    assert!(matches!(&failed, Err(ReplicaError::Unavailable(_))), "{failed:?}");

    // The same replica re-resolves the master through the Sentinel once it promoted the standby.
    wait_for("writes to reach the promoted master", Duration::from_secs(15), || {
        let replica = replica.clone();
        async move { replica.write_records(shard, epoch, vec![put(3, b"after")]).await.is_ok() }
    })
    .await;
    assert!(replica.ping().await);
    let values = replica.read_records(shard, vec![key(1), key(3)]).await.unwrap();
    assert_eq!(values, vec![Some(b"before".to_vec()), Some(b"after".to_vec())]);
    assert_eq!(replica.holder(LeaseName::Shard(shard)).await.unwrap(), Some(("a".to_string(), epoch)));
    let role: redis::Value = standby.query(&mut redis::cmd("ROLE"));
    assert!(format!("{role:?}").contains("master"), "{role:?}");
}

/// Round-trip figures (not a check): `cargo test -p idp-actors --lib measure_write_round_trips -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn measure_write_round_trips() {
    let master = TestRedis::start();
    let _standby = TestRedis::start_replica_of(&master);
    for min_replicas_ack in [0, 1] {
        let replica =
            must_connect(RedisSettings { min_replicas_ack, ..settings(RedisTarget::Url(master.url())) }).await;
        let started = Instant::now();
        for round in 0..2_000u32 {
            replica.write_records(ShardId(0), 0, vec![put((round % 200) as u8, b"value")]).await.unwrap();
        }
        let one_at_a_time = started.elapsed() / 2_000;
        let started = Instant::now();
        let acks = (0..64u16).flat_map(|shard| (0..200u8).map(move |round| (shard, round)).collect::<Vec<_>>());
        let acks: Vec<_> =
            acks.map(|(shard, round)| replica.write_records(ShardId(shard), 0, vec![put(round, &[0; 300])])).collect();
        join_all(acks).await.into_iter().collect::<Result<Vec<()>, _>>().unwrap();
        let elapsed = started.elapsed();
        eprintln!(
            "min_replicas_ack={min_replicas_ack}: one write at a time {one_at_a_time:?} per write; \
             12800 concurrent writes of 64 shards in {elapsed:?} ({:.0} writes/s)",
            12_800.0 / elapsed.as_secs_f64()
        );
    }
}
