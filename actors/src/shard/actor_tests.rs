//! `ShardActor` through its mailbox: a login flow that survives a restart at any step, lazy rehydration, replica
//! faults and fencing, and concurrent redemptions.
//!
//! The replica is `MemoryReplica`, behind [`TestReplica`] when a test needs to refuse, lose or hold writes: a fault
//! injector for unit tests, not a stand-in for Redis in a replication test. Every wait ends on a condition.

use super::model::{
    AuthenticatePending, CheckGrant, CreatePending, Decision, EndSession, FinishPending, GetRefresh, GrantIssue,
    GrantTokens, RedeemCode, RotateRefresh, ShardError, ShardOp, ShardResult, ShardState,
};
use super::{Execute, ResidentCount, ShardActor};
use crate::clock::{ManualClock, SharedClock};
use crate::replica::{Epoch, MemoryReplica, RecordWrite, Replica, ReplicaError, ReplicaFuture};
use crate::shards::LocalShards;
use actix::{Addr, Supervisor};
use futures::future::join_all;
use futures::FutureExt;
use idp_proto::records::{
    Authentication, AuthorizationRequest, PendingAuthorization, PendingStage, Prompt, Record, RecordKey, RecordKind,
    ResponseMode, ResponseType, StoredRecord,
};
use idp_proto::{RecordId, ShardId};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

const NOW: u64 = 1_750_000_000_000;
const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;
const CLIENT: &str = "client-a";
const REDIRECT_URI: &str = "https://rp.example/callback";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

const SHARD_COUNT: u16 = 4;
const SHARD: ShardId = ShardId(1);

// ---------------------------------------------------------------------------------------------------------------
// A fault-injecting replica
// ---------------------------------------------------------------------------------------------------------------

/// How [`TestReplica`] answers writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteMode {
    /// Applied, then acknowledged.
    Acknowledge,
    /// Refused before being applied: the write did not happen.
    Refuse,
    /// Applied, but the acknowledgement is lost: the write happened and the writer cannot know it.
    LoseAcknowledgement,
    /// Held in flight until [`TestReplica::release`], then applied in order and acknowledged.
    Hold,
}

struct HeldWrite {
    shard: ShardId,
    epoch: Epoch,
    writes: Vec<RecordWrite>,
    ack_tx: oneshot::Sender<Result<(), ReplicaError>>,
}

struct Faults {
    mode: WriteMode,
    /// The keys of every read, in order: what lazy rehydration asked for.
    reads: Vec<Vec<RecordKey>>,
    held: Vec<HeldWrite>,
}

#[derive(Clone)]
struct TestReplica {
    memory: MemoryReplica,
    faults: Arc<Mutex<Faults>>,
    held_count_tx: Arc<watch::Sender<usize>>,
}

impl TestReplica {
    fn new(clock: SharedClock) -> Self {
        let faults = Faults { mode: WriteMode::Acknowledge, reads: Vec::new(), held: Vec::new() };
        Self {
            memory: MemoryReplica::new(clock),
            faults: Arc::new(Mutex::new(faults)),
            held_count_tx: Arc::new(watch::channel(0).0),
        }
    }

    fn set_mode(&self, mode: WriteMode) {
        self.faults.lock().mode = mode;
    }

    fn take_reads(&self) -> Vec<Vec<RecordKey>> {
        std::mem::take(&mut self.faults.lock().reads)
    }

    /// Waits until `count` writes are held in flight.
    async fn until_held(&self, count: usize) {
        let mut held_count_rx = self.held_count_tx.subscribe();
        let _ = held_count_rx.wait_for(|held| *held >= count).await;
    }

    /// Applies the held writes in their order, acknowledges them, and acknowledges writes at once from now on.
    fn release(&self) {
        let mut faults = self.faults.lock();
        faults.mode = WriteMode::Acknowledge;
        for held in faults.held.drain(..) {
            let result = self.memory.write_records(held.shard, held.epoch, held.writes);
            let _ = held.ack_tx.send(result.now_or_never().expect("memory writes are immediate"));
        }
        self.held_count_tx.send_replace(0);
    }

    /// What the replica holds, read directly (not through any actor).
    fn records(&self, keys: &[RecordKey]) -> Vec<Option<Record>> {
        let read = self.memory.read_records(SHARD, keys.to_vec());
        let values = read.now_or_never().expect("memory reads are immediate").unwrap();
        values.into_iter().map(|value| value.map(|bytes| StoredRecord::decode(&bytes).unwrap())).collect()
    }

    fn record(&self, key: RecordKey) -> Option<Record> {
        self.records(&[key]).pop().flatten()
    }
}

fn lost(reason: &str) -> ReplicaFuture<()> {
    futures::future::ready(Err(ReplicaError::Unavailable(reason.into()))).boxed()
}

impl Replica for TestReplica {
    fn write_records(&self, shard: ShardId, epoch: Epoch, writes: Vec<RecordWrite>) -> ReplicaFuture<()> {
        let mut faults = self.faults.lock();
        match faults.mode {
            WriteMode::Acknowledge => self.memory.write_records(shard, epoch, writes),
            WriteMode::Refuse => lost("write refused by the test"),
            WriteMode::LoseAcknowledgement => {
                let _ = self.memory.write_records(shard, epoch, writes).now_or_never();
                lost("acknowledgement lost by the test")
            }
            WriteMode::Hold => {
                let (ack_tx, ack_rx) = oneshot::channel();
                faults.held.push(HeldWrite { shard, epoch, writes, ack_tx });
                self.held_count_tx.send_replace(faults.held.len());
                async move { ack_rx.await.unwrap_or_else(|_| Err(ReplicaError::Unavailable("dropped".into()))) }.boxed()
            }
        }
    }

    fn read_records(&self, shard: ShardId, keys: Vec<RecordKey>) -> ReplicaFuture<Vec<Option<Vec<u8>>>> {
        self.faults.lock().reads.push(keys.clone());
        self.memory.read_records(shard, keys)
    }

    fn read_document(&self, name: &str) -> ReplicaFuture<Option<Vec<u8>>> {
        self.memory.read_document(name)
    }

    fn write_document(&self, name: &str, value: Vec<u8>) -> ReplicaFuture<()> {
        self.memory.write_document(name, value)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Where operations go
// ---------------------------------------------------------------------------------------------------------------

/// The node's shards (operations go to [`SHARD`]), or one supervised actor: an owner at some epoch.
trait ShardOwner {
    async fn run<O: ShardOp>(&self, op: O) -> ShardResult<O::Output>;
}

impl ShardOwner for LocalShards {
    async fn run<O: ShardOp>(&self, op: O) -> ShardResult<O::Output> {
        self.execute(SHARD, op).await
    }
}

impl ShardOwner for Addr<ShardActor> {
    async fn run<O: ShardOp>(&self, op: O) -> ShardResult<O::Output> {
        match self.send(Execute(op)).await {
            Ok(reply) => reply,
            Err(error) => Err(ShardError::Unavailable(error.to_string())),
        }
    }
}

async fn must<O: ShardOp>(owner: &impl ShardOwner, op: O) -> O::Output {
    match owner.run(op).await {
        Ok(output) => output,
        Err(error) => panic!("{} was refused: {error:?}", std::any::type_name::<O>()),
    }
}

/// Test probe: the live records the shard holds for these keys, fetched lazily like any operation's.
struct Peek(Vec<RecordKey>);

impl ShardOp for Peek {
    type Output = Vec<Option<Record>>;

    fn keys(&self) -> Vec<RecordKey> {
        self.0.clone()
    }

    fn decide(self, state: &ShardState, now_ms: u64) -> Decision<Self::Output> {
        let records = self.0.iter().map(|key| state.get(key, now_ms).cloned()).collect();
        Decision { writes: Vec::new(), reply: Ok(records) }
    }
}

struct Node {
    replica: TestReplica,
    shards: LocalShards,
}

impl Node {
    fn start() -> Self {
        let clock: SharedClock = Arc::new(ManualClock::new(NOW));
        let replica = TestReplica::new(clock.clone());
        let shards = LocalShards::start(SHARD_COUNT, 2, Arc::new(replica.clone()), clock);
        Self { replica, shards }
    }

    /// Restarts every shard actor and checks that nothing stayed in memory.
    async fn must_restart(&self) {
        self.shards.restart_all().await;
        assert_eq!(self.shards.resident_records().await, 0);
    }

    /// Every record of the login reads the same through the shard actor as in the replica.
    async fn assert_shard_matches_replica(&self, login: &Login) {
        let keys = login.keys();
        let through_actor = must(&self.shards, Peek(keys.clone())).await;
        assert_eq!(through_actor, self.replica.records(&keys));
    }
}

fn start_owner(epoch: Epoch, replica: &MemoryReplica, clock: &SharedClock) -> Addr<ShardActor> {
    let (replica, clock) = (Arc::new(replica.clone()), clock.clone());
    Supervisor::start(move |_ctx| ShardActor::new(SHARD, epoch, replica, clock))
}

// ---------------------------------------------------------------------------------------------------------------
// One login, step by step
// ---------------------------------------------------------------------------------------------------------------

/// The records of one login, all in one shard, as the node allocates them.
struct Login {
    pending: RecordId,
    session: RecordId,
    grant: RecordId,
    code: RecordId,
    /// Refresh tokens of the family, oldest first.
    refresh: Vec<RecordId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    CreatePending,
    Authenticate,
    Finish,
    Redeem,
    Rotate,
    RotateAgain,
}

const FLOW: [Step; 6] =
    [Step::CreatePending, Step::Authenticate, Step::Finish, Step::Redeem, Step::Rotate, Step::RotateAgain];

fn authorization_request() -> AuthorizationRequest {
    AuthorizationRequest {
        client_id: CLIENT.into(),
        redirect_uri: REDIRECT_URI.into(),
        response_type: ResponseType { code: true, id_token: false, token: false },
        response_mode: ResponseMode::Query,
        scopes: vec!["openid".into(), "offline_access".into()],
        state: Some("af0ifjsldkj".into()),
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: Some(CHALLENGE.into()),
        prompt: Prompt::default(),
        max_age: None,
        login_hint: None,
        idp_hint: None,
        ui_locales: None,
        acr_values: None,
        resource: None,
    }
}

impl Login {
    fn new() -> Self {
        Self {
            pending: RecordId::random(),
            session: RecordId::random(),
            grant: RecordId::random(),
            code: RecordId::random(),
            refresh: Vec::new(),
        }
    }

    fn keys(&self) -> Vec<RecordKey> {
        let mut keys = vec![
            RecordKey::new(RecordKind::Pending, self.pending),
            RecordKey::new(RecordKind::Session, self.session),
            RecordKey::new(RecordKind::Grant, self.grant),
            RecordKey::new(RecordKind::Code, self.code),
        ];
        keys.extend(self.refresh.iter().map(|id| RecordKey::new(RecordKind::Refresh, *id)));
        keys
    }

    fn create_pending(&self) -> CreatePending {
        let pending = PendingAuthorization {
            request: authorization_request(),
            stage: PendingStage::AwaitingLogin,
            created_at_ms: NOW,
            expires_at_ms: NOW + 10 * MINUTE,
        };
        CreatePending { id: self.pending, pending }
    }

    fn authenticate(&self) -> AuthenticatePending {
        let authentication =
            Authentication { user_id: "user-alice".into(), auth_time: NOW / 1_000, amr: vec!["pwd".into()], acr: None };
        AuthenticatePending {
            pending: self.pending,
            existing_session: None,
            new_session: self.session,
            new_sid: "sid-1".into(),
            authentication,
            session_expires_at_ms: NOW + DAY,
        }
    }

    fn finish(&self) -> FinishPending {
        let issue = GrantIssue {
            grant: self.grant,
            code: Some(self.code),
            code_expires_at_ms: NOW + MINUTE,
            grant_expires_at_ms: NOW + 30 * DAY,
            offline: true,
        };
        FinishPending { pending: self.pending, session: self.session, issue }
    }

    /// The token request of the client for this login's code (RFC 6749 §4.1.3, RFC 7636 §4.5).
    fn redeem(&self) -> RedeemCode {
        RedeemCode {
            code: self.code,
            client_id: CLIENT.into(),
            redirect_uri: Some(REDIRECT_URI.into()),
            code_verifier: Some(VERIFIER.into()),
            client_may_refresh: true,
            new_refresh: RecordId::random(),
        }
    }

    /// The refresh request with the `age`-th newest token (0: the newest).
    fn rotate(&self, age: usize) -> RotateRefresh {
        RotateRefresh {
            refresh: self.refresh[self.refresh.len() - 1 - age],
            client_id: CLIENT.into(),
            scopes: None,
            new_refresh: RecordId::random(),
        }
    }

    fn check_grant(&self) -> CheckGrant {
        CheckGrant { grant: self.grant }
    }

    fn accept(&mut self, tokens: &GrantTokens) {
        assert_eq!(tokens.grant_id, self.grant);
        self.refresh.push(tokens.refresh.expect("offline_access issues a refresh token"));
    }

    async fn must_step(&mut self, owner: &impl ShardOwner, step: Step) {
        match step {
            Step::CreatePending => must(owner, self.create_pending()).await,
            Step::Authenticate => {
                let authenticated = must(owner, self.authenticate()).await;
                assert_eq!(authenticated.session, self.session);
            }
            Step::Finish => {
                let issued = must(owner, self.finish()).await;
                assert_eq!(issued.request, authorization_request());
            }
            Step::Redeem => {
                let tokens = must(owner, self.redeem()).await;
                self.accept(&tokens);
            }
            Step::Rotate | Step::RotateAgain => {
                let tokens = must(owner, self.rotate(0)).await;
                self.accept(&tokens);
            }
        }
    }

    async fn must_run_until(&mut self, owner: &impl ShardOwner, last: Step) {
        for step in FLOW {
            self.must_step(owner, step).await;
            if step == last {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Restarts: memory is a cache of the replica
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn the_login_flow_completes_from_the_replica_alone_after_restarts_at_any_step_boundaries() {
    // I1, I5: every acknowledged write is in the replica, so a fresh owner continues any login.
    let node = Node::start();
    for restart_after in 0..1u32 << FLOW.len() {
        let mut login = Login::new();
        for (index, step) in FLOW.into_iter().enumerate() {
            login.must_step(&node.shards, step).await;
            if restart_after & (1 << index) != 0 {
                node.must_restart().await;
            }
        }
        node.assert_shard_matches_replica(&login).await;
    }
}

#[actix_rt::test]
async fn a_code_replayed_after_a_restart_is_refused_and_revokes_the_grant() {
    // I2: the consumed marker was written through, so it survives the memory.
    let node = Node::start();
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::Redeem).await;
    node.must_restart().await;
    let replay = node.shards.run(login.redeem()).await;
    assert_eq!(replay, Err(ShardError::CodeReplayed));
    node.must_restart().await;
    assert_eq!(node.shards.run(login.check_grant()).await, Err(ShardError::NotFound));
    let refresh = node.shards.run(login.rotate(0)).await;
    assert_eq!(refresh, Err(ShardError::InvalidGrant("refresh token was revoked".into())));
}

#[actix_rt::test]
async fn a_refresh_token_reused_after_a_restart_revokes_the_family() {
    // I3
    let node = Node::start();
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::RotateAgain).await;
    node.must_restart().await;
    let reuse = node.shards.run(login.rotate(1)).await;
    assert_eq!(reuse, Err(ShardError::RefreshReused));
    node.must_restart().await;
    let newest = node.shards.run(login.rotate(0)).await;
    assert_eq!(newest, Err(ShardError::InvalidGrant("refresh token was revoked".into())));
    assert_eq!(node.shards.run(login.check_grant()).await, Err(ShardError::NotFound));
}

#[actix_rt::test]
async fn rehydration_fetches_the_records_an_operation_depends_on_and_nothing_else() {
    let node = Node::start();
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::Finish).await;
    let code_key = RecordKey::new(RecordKind::Code, login.code);
    let grant_key = RecordKey::new(RecordKind::Grant, login.grant);
    let session_key = RecordKey::new(RecordKind::Session, login.session);

    node.must_restart().await;
    node.replica.take_reads();
    let tokens = must(&node.shards, login.redeem()).await;
    assert_eq!(tokens.grant.client_id, CLIENT);
    login.accept(&tokens);
    // The code first, then the grant it names; resident now: code, grant, and the new refresh token.
    assert_eq!(node.replica.take_reads(), [vec![code_key], vec![grant_key]]);
    assert_eq!(node.shards.resident_records().await, 3);
    // Resident records are served from memory.
    must(&node.shards, GetRefresh { refresh: login.refresh[0] }).await;
    assert!(node.replica.take_reads().is_empty());

    node.must_restart().await;
    let tokens = must(&node.shards, login.rotate(0)).await;
    let refresh_key = RecordKey::new(RecordKind::Refresh, login.refresh[0]);
    login.accept(&tokens);
    assert_eq!(node.replica.take_reads(), [vec![refresh_key], vec![grant_key]]);

    node.must_restart().await;
    let end = EndSession { session: login.session, keep_offline: false };
    assert_eq!(must(&node.shards, end).await, 1);
    assert_eq!(node.replica.take_reads(), [vec![session_key], vec![grant_key]]);
}

// ---------------------------------------------------------------------------------------------------------------
// Replica faults: the actor never guesses
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_refused_write_replies_unavailable_and_the_shard_reloads_from_the_replica() {
    let node = Node::start();
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::Finish).await;
    let code_key = RecordKey::new(RecordKind::Code, login.code);

    node.replica.set_mode(WriteMode::Refuse);
    let refused = node.shards.run(login.redeem()).await;
    assert!(matches!(refused, Err(ShardError::Unavailable(_))), "{refused:?}");
    // Restarted: the consumption it decided in memory is gone, as it is from the replica.
    assert_eq!(node.shards.resident_records().await, 0);
    assert!(matches!(node.replica.record(code_key), Some(Record::Code(code)) if !code.consumed));
    let retried = node.shards.run(login.redeem()).await;
    assert!(matches!(retried, Err(ShardError::Unavailable(_))), "{retried:?}");

    node.replica.set_mode(WriteMode::Acknowledge);
    let tokens = must(&node.shards, login.redeem()).await;
    login.accept(&tokens);
    assert!(matches!(node.replica.record(code_key), Some(Record::Code(code)) if code.consumed));
    node.assert_shard_matches_replica(&login).await;
}

#[actix_rt::test]
async fn a_lost_acknowledgement_is_not_guessed_the_retry_meets_the_stored_write() {
    // I3: the rotation did happen; the client's retry of the old token is a reuse.
    let node = Node::start();
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::Redeem).await;

    node.replica.set_mode(WriteMode::LoseAcknowledgement);
    let rotation = login.rotate(0);
    let unseen_refresh = rotation.new_refresh;
    let lost_reply = node.shards.run(rotation).await;
    assert!(matches!(lost_reply, Err(ShardError::Unavailable(_))), "{lost_reply:?}");
    assert_eq!(node.shards.resident_records().await, 0);
    let unseen_key = RecordKey::new(RecordKind::Refresh, unseen_refresh);
    assert!(node.replica.record(unseen_key).is_some());

    node.replica.set_mode(WriteMode::Acknowledge);
    let retry = node.shards.run(login.rotate(0)).await;
    assert_eq!(retry, Err(ShardError::RefreshReused));
    let unseen = RotateRefresh { refresh: unseen_refresh, ..login.rotate(0) };
    let unseen_reply = node.shards.run(unseen).await;
    assert_eq!(unseen_reply, Err(ShardError::InvalidGrant("refresh token was revoked".into())));
    node.assert_shard_matches_replica(&login).await;
}

#[actix_rt::test]
async fn no_reply_reveals_a_write_the_replica_refused() {
    // Replays decided on the unacknowledged consumption must not answer `CodeReplayed` either.
    let node = Node::start();
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::Finish).await;

    node.replica.set_mode(WriteMode::Refuse);
    let replies = join_all((0..10).map(|_| node.shards.run(login.redeem()))).await;
    for reply in &replies {
        assert!(matches!(reply, Err(ShardError::Unavailable(_))), "{replies:?}");
    }
    node.replica.set_mode(WriteMode::Acknowledge);
    let tokens = must(&node.shards, login.redeem()).await;
    login.accept(&tokens);
    assert!(!tokens.grant.revoked);
    node.assert_shard_matches_replica(&login).await;
}

#[actix_rt::test]
async fn a_fenced_owner_cannot_commit_and_the_code_is_redeemed_once_across_owners() {
    // I6, I2
    let clock: SharedClock = Arc::new(ManualClock::new(NOW));
    let replica = MemoryReplica::new(clock.clone());
    let old_owner = start_owner(replica.bump_epoch(SHARD), &replica, &clock);
    let mut login = Login::new();
    login.must_run_until(&old_owner, Step::Finish).await;

    // A new owner takes the lease; the old one, paused meanwhile, still holds the unused code in memory.
    let new_owner = start_owner(replica.bump_epoch(SHARD), &replica, &clock);
    let stale = old_owner.run(login.redeem()).await;
    // Fenced: nothing committed, and the old owner retires (the router retries on the new owner).
    assert_eq!(stale, Err(ShardError::Moved));
    assert_eq!(old_owner.send(ResidentCount).await.unwrap(), 0);

    let tokens = must(&new_owner, login.redeem()).await;
    login.accept(&tokens);
    let stale_retry = old_owner.run(login.redeem()).await;
    assert_eq!(stale_retry, Err(ShardError::Moved));
    // The stale owner decided to revoke the grant on that replay, but could not commit it.
    assert!(!must(&new_owner, login.check_grant()).await.revoked);
    assert_eq!(new_owner.run(login.redeem()).await, Err(ShardError::CodeReplayed));
}

// ---------------------------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn fifty_concurrent_redemptions_of_one_code_succeed_exactly_once() {
    // I2, for a resident code and for one reloaded after a restart.
    let node = Node::start();
    for restart_first in [false, true] {
        let mut login = Login::new();
        login.must_run_until(&node.shards, Step::Finish).await;
        if restart_first {
            node.must_restart().await;
        }
        let replies = join_all((0..50).map(|_| node.shards.run(login.redeem()))).await;
        let successes = replies.iter().filter(|reply| reply.is_ok()).count();
        let replays = replies.iter().filter(|reply| **reply == Err(ShardError::CodeReplayed)).count();
        assert_eq!((successes, replays), (1, 49), "{replies:?}");
        // The replays revoked what the one success issued.
        assert_eq!(node.shards.run(login.check_grant()).await, Err(ShardError::NotFound));
    }
}

#[actix_rt::test]
async fn fifty_concurrent_rotations_of_one_refresh_token_succeed_exactly_once() {
    // I3
    let node = Node::start();
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::Redeem).await;
    node.must_restart().await;
    let replies = join_all((0..50).map(|_| node.shards.run(login.rotate(0)))).await;
    let winners: Vec<&GrantTokens> = replies.iter().filter_map(|reply| reply.as_ref().ok()).collect();
    let reuses = replies.iter().filter(|reply| **reply == Err(ShardError::RefreshReused)).count();
    assert_eq!((winners.len(), reuses), (1, 49), "{replies:?}");
    login.accept(winners[0]);
    let winner_next = node.shards.run(login.rotate(0)).await;
    assert_eq!(winner_next, Err(ShardError::InvalidGrant("refresh token was revoked".into())));
}

/// I2: a restart while a write is in flight must not let a fetch read the replica before that write lands.
#[actix_rt::test]
async fn a_restart_while_a_redemption_is_in_flight_never_redeems_the_code_twice() {
    // The replica acknowledges writes asynchronously (as Redis does); reads see only applied writes.
    let node = Node::start();
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::Finish).await;
    node.replica.set_mode(WriteMode::Hold);

    let first = node.shards.run(login.redeem());
    let restart_then_second = async {
        // The first redemption is decided and its write is in flight.
        node.replica.until_held(1).await;
        node.shards.restart_all().await;
        let second = node.shards.run(login.redeem());
        let release = async {
            // A correct actor does not decide the second before the first write is acknowledged: stop waiting.
            let _ = tokio::time::timeout(Duration::from_secs(1), node.replica.until_held(2)).await;
            node.replica.release();
        };
        tokio::join!(second, release).0
    };
    let (first, second) = tokio::join!(first, restart_then_second);
    let successes = [&first, &second].iter().filter(|reply| reply.is_ok()).count();
    assert_eq!(successes, 1, "first: {first:?}, second: {second:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// What the replica settles without an owner
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn the_replica_settles_a_committed_request_and_a_read_but_leaves_every_write_to_the_owner() {
    let node = Node::start();
    let replica: crate::replica::SharedReplica = Arc::new(node.replica.clone());
    let mut login = Login::new();
    login.must_run_until(&node.shards, Step::Finish).await;

    // Before the owner ran it, the redemption is a write: left to the owner.
    let redeem = login.redeem();
    assert_eq!(settle(&replica, redeem.clone()).await, None);
    // The owner committed it and its answer was lost: the same request is settled by the replica, as the owner
    // would answer it again.
    let redeemed = must(&node.shards, redeem.clone()).await;
    assert_eq!(settle(&replica, redeem.clone()).await, Some(Ok(redeemed.clone())));
    login.accept(&redeemed);

    // The same for a rotation.
    let rotate = login.rotate(0);
    assert_eq!(settle(&replica, rotate.clone()).await, None);
    let rotated = must(&node.shards, rotate.clone()).await;
    assert_eq!(settle(&replica, rotate).await, Some(Ok(rotated.clone())));
    login.accept(&rotated);

    // Another request with a rotated token is a reuse, which revokes the family: a write, left to the owner.
    assert_eq!(settle(&replica, login.rotate(1)).await, None);
    // So is another redemption of the code (a replay).
    assert_eq!(settle(&replica, RedeemCode { new_refresh: RecordId::random(), ..redeem }).await, None);
    // A read is settled.
    let (token, grant) = must(&node.shards, GetRefresh { refresh: login.refresh[1] }).await;
    assert_eq!(settle(&replica, GetRefresh { refresh: login.refresh[1] }).await, Some(Ok((token, grant))));
    // Settling wrote nothing: the owner's records still match the replica's, and the newest token still rotates.
    node.assert_shard_matches_replica(&login).await;
    let newest = must(&node.shards, login.rotate(0)).await;
    login.accept(&newest);

    // The case it exists for: the write happened, its acknowledgement was lost, the owner answered that it failed.
    // The replica settles that very request as committed, with the successor it stored.
    node.replica.set_mode(WriteMode::LoseAcknowledgement);
    let rotation = login.rotate(0);
    let lost = node.shards.run(rotation.clone()).await;
    assert!(matches!(lost, Err(ShardError::Unavailable(_))), "{lost:?}");
    node.replica.set_mode(WriteMode::Acknowledge);
    let settled = settle(&replica, rotation.clone()).await.expect("settled").expect("committed");
    assert_eq!(settled.refresh, Some(rotation.new_refresh));
}

/// [`super::settled_by_replica`] for the test shard, now.
async fn settle<O: ShardOp>(replica: &crate::replica::SharedReplica, op: O) -> Option<ShardResult<O::Output>> {
    super::settled_by_replica(replica, NOW, SHARD, op).await
}
